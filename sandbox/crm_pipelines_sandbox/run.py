"""The embedded sandbox: seeded data served by real servers on loopback.

``Sandbox`` generates the data once per (scale, seed, date), starts the CRM API simulators and the
SFTP server, and hands out the environment variables that point the pipelines at them.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from crm_pipelines import settings
from crm_pipelines.webhooks.senders import SENDERS
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.erp_db import erp_database_url
from crm_pipelines_sandbox.sftp_server import SandboxSFTPServer, make_keys, write_known_hosts
from crm_pipelines_sandbox.simulators.hubspot import HubSpotSimulator
from crm_pipelines_sandbox.simulators.salesforce import SalesforceSimulator
from crm_pipelines_sandbox.systems import Started, sandbox_crm, sandbox_crms
from crm_pipelines_sandbox.webhook_receiver import SandboxReceiver

SFTP_USER = "finance"
# The variables salesforce.yaml and hubspot.yaml name; the product reads them through those declarations.
SALESFORCE_BASE_URL = "SALESFORCE_BASE_URL"
SALESFORCE_CLIENT_ID = "SALESFORCE_CLIENT_ID"
SALESFORCE_CLIENT_SECRET = "SALESFORCE_CLIENT_SECRET"
HUBSPOT_BASE_URL = "HUBSPOT_BASE_URL"
HUBSPOT_ACCESS_TOKEN = "HUBSPOT_ACCESS_TOKEN"

# Every variable the sandbox exports, but the other CRMs' (their declarations name theirs).
CONNECTION_VARIABLES: tuple[str, ...] = (
    SALESFORCE_BASE_URL,
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    HUBSPOT_BASE_URL,
    HUBSPOT_ACCESS_TOKEN,
    settings.ERP_DATABASE_URL,
    settings.SFTP_HOST,
    settings.SFTP_PORT,
    settings.SFTP_USERNAME,
    settings.SFTP_PRIVATE_KEY_PATH,
    settings.SFTP_KNOWN_HOSTS,
    settings.SFTP_FINANCE_DIR,
)

# Raised whenever the generated layout changes, so a cached sandbox of an older layout is rebuilt.
DATA_VERSION = 11


class Sandbox:
    """Seeded CRM, ERP and SFTP data behind real loopback servers.

    Args:
        root: Folder for the generated data, keys and served files.
        contacts: Scale: number of people across the CRMs.
        seed: Random seed; the same seed gives the same data.
        as_of: Business day the data ends on (the nightly partition to run).
    """

    def __init__(
        self, root: Path, *, contacts: int = 2000, seed: int = 42, as_of: dt.date, webhooks: bool = False
    ) -> None:
        self.root = Path(root)
        # webhooks: also run the webhook receiver, and have the simulators that send webhooks send theirs.
        self.receiver = SandboxReceiver(self.root / "webhooks.sqlite3") if webhooks else None
        self.contacts = contacts
        self.seed = seed
        self.as_of = as_of
        self.layout: SandboxLayout | None = None
        self._salesforce: SalesforceSimulator | None = None
        self._hubspot: HubSpotSimulator | None = None
        self._sftp: SandboxSFTPServer | None = None
        self._others: dict[str, Started] = {}
        self._env: dict[str, str] = {}
        self._on_stop: list[Callable[[], object]] = []

    @property
    def world(self) -> str:
        """Names the generated data: the generator's version, scale, seed and day."""
        return f"data-v{DATA_VERSION}-{self.contacts}-{self.seed}-{self.as_of.isoformat()}"

    def _data_dir(self) -> Path:
        # The generator's version is part of the name: data of an older layout is made again.
        return self.root / self.world

    def reset(self) -> None:
        """Forget this world's generated data (files moved, records written back): the next
        :meth:`prepare` generates it again."""
        shutil.rmtree(self._data_dir(), ignore_errors=True)
        self.layout = None

    def prepare(self) -> SandboxLayout:
        """Generate the data unless this scale, seed and date were generated before."""
        folder = self._data_dir()
        marker = folder / "layout.json"
        if not marker.exists():
            if folder.exists():
                shutil.rmtree(folder)  # an interrupted generation: start over
            layout = generate_sandbox(folder, contacts=self.contacts, seed=self.seed, as_of=self.as_of)
            marker.write_text(json.dumps({k: str(v) for k, v in vars(layout).items()}, indent=2))
        else:
            layout = SandboxLayout(**{k: Path(v) for k, v in json.loads(marker.read_text()).items()})
        self.layout = layout
        return layout

    def start(self) -> dict[str, str]:
        """Start every server; returns the environment variables that point at them."""
        layout = self.prepare()
        client_id = "crm-pipelines-sandbox"
        client_secret = secrets.token_urlsafe(24)
        hubspot_token = "pat-sandbox-" + secrets.token_hex(16)
        self._salesforce = SalesforceSimulator(
            layout.salesforce_store, client_id=client_id, client_secret=client_secret
        )
        receiver_env = self.receiver.start() if self.receiver is not None else {}
        self._hubspot = HubSpotSimulator(
            layout.hubspot_store,
            access_token=hubspot_token,
            webhook_url=self.receiver.url("hubspot") if self.receiver is not None else None,
            webhook_secret=receiver_env.get("HUBSPOT_WEBHOOK_SECRET"),
        )
        salesforce_url = self._salesforce.start()
        hubspot_url = self._hubspot.start()

        keys = make_keys(self.root / "keys")
        self._sftp = SandboxSFTPServer(
            layout.sftp_root,
            username=SFTP_USER,
            authorized_key=keys.client_public_key_path,
            host_key_path=keys.host_key_path,
        )
        port = self._sftp.start()
        write_known_hosts(keys.known_hosts_path, self._sftp.host, port, keys.host_key_path)
        self._env = {
            SALESFORCE_BASE_URL: salesforce_url,
            SALESFORCE_CLIENT_ID: client_id,
            SALESFORCE_CLIENT_SECRET: client_secret,
            HUBSPOT_BASE_URL: hubspot_url,
            HUBSPOT_ACCESS_TOKEN: hubspot_token,
            settings.ERP_DATABASE_URL: erp_database_url(layout.erp_db),
            # The sandbox is there to be written: order-to-cash and the syncs into every simulator.
            settings.ERP_WRITE_DATABASE_URL: erp_database_url(layout.erp_db),
            settings.WRITE_BACK: "on",
            settings.SFTP_HOST: self._sftp.host,
            settings.SFTP_PORT: str(port),
            settings.SFTP_USERNAME: SFTP_USER,
            settings.SFTP_PRIVATE_KEY_PATH: str(keys.client_key_path.resolve()),
            settings.SFTP_KNOWN_HOSTS: str(keys.known_hosts_path.resolve()),
            settings.SFTP_FINANCE_DIR: settings.DEFAULT_SFTP_FINANCE_DIR,
            **receiver_env,
        }
        # The other CRMs: each simulator with fresh credentials, and the variables its YAML names.
        for system in sandbox_crms():
            crm = sandbox_crm(system)
            if self.receiver is not None and crm.webhook_sender is not None:
                started = crm.start_with_webhooks(
                    layout.crm_store(system),
                    url=self.receiver.url(crm.webhook_sender),
                    secret=receiver_env[SENDERS[crm.webhook_sender].secret_variable],
                )
            else:
                started = crm.start(layout.crm_store(system))
            self._others[system] = started
            self._env.update(started.env)
        return dict(self._env)

    @property
    def simulators(self) -> dict[str, object]:
        """Every running CRM simulator by system name (tests inject faults and expire tokens through it)."""
        running: dict[str, object] = {name: started.simulator for name, started in self._others.items()}
        if self._salesforce is not None:
            running["salesforce"] = self._salesforce
        if self._hubspot is not None:
            running["hubspot"] = self._hubspot
        return running

    @property
    def env(self) -> dict[str, str]:
        return dict(self._env)

    def on_stop(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the sandbox stops (servers started beside it, such as a warehouse)."""
        self._on_stop.append(callback)

    def stop(self) -> None:
        while self._on_stop:
            self._on_stop.pop()()
        for started in self._others.values():
            started.simulator.stop()
        self._others = {}
        for server in (self._sftp, self._hubspot, self._salesforce):
            if server is not None:
                server.stop()
        self._sftp = self._hubspot = self._salesforce = None
        if self.receiver is not None:
            self.receiver.stop()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
