"""Every environment variable the pipelines read, in one place.

Nothing here is read at import time: call the functions when a run or command needs the value.
Connection secrets are wired into resources with ``dg.EnvVar`` in ``crm_pipelines/definitions.py``;
this module only holds names, defaults and the non-secret paths.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crm_pipelines.lake import LakePath, lake_root

# Names of environment variables, documented in the README ("Connecting real systems"). A CRM's
# variables are named by its declaration (crm_pipelines/connectors/systems/<system>.yaml).
ERP_DATABASE_URL = "ERP_DATABASE_URL"
# An account that may write the ERP (order-to-cash); unset, no sync writes into the ERP.
ERP_WRITE_DATABASE_URL = "ERP_WRITE_DATABASE_URL"
# "on" lets the syncs write into the CRMs and the ERP; anything else runs every sync as a dry run,
# which records its plan in ops.sync_plan (a preview before the first real run).
WRITE_BACK = "CRM_PIPELINES_WRITE_BACK"
SFTP_HOST = "SFTP_HOST"
SFTP_PORT = "SFTP_PORT"
SFTP_USERNAME = "SFTP_USERNAME"
SFTP_PRIVATE_KEY_PATH = "SFTP_PRIVATE_KEY_PATH"
SFTP_KNOWN_HOSTS = "SFTP_KNOWN_HOSTS"
SFTP_FINANCE_DIR = "SFTP_FINANCE_DIR"
SFTP_PASSWORD = "SFTP_PASSWORD"
SFTP_PRIVATE_KEY_PASSPHRASE = "SFTP_PRIVATE_KEY_PASSPHRASE"
SFTP_HOST_KEY_FINGERPRINT = "SFTP_HOST_KEY_FINGERPRINT"
SFTP_TRUST_ON_FIRST_USE = "SFTP_TRUST_ON_FIRST_USE"
SFTP_TIMEOUT_SECONDS = "SFTP_TIMEOUT_SECONDS"
# How long a file of a drop with complete_when: stable must stay unchanged (seconds; default 2).
SFTP_STABLE_SECONDS = "SFTP_STABLE_SECONDS"
WAREHOUSE_URL = "WAREHOUSE_URL"
# An owner of the PostgreSQL warehouse database, for `crm-pipelines warehouse-roles` (else WAREHOUSE_URL).
WAREHOUSE_ADMIN_URL = "WAREHOUSE_ADMIN_URL"
# With a PostgreSQL warehouse: the local DuckDB file the models run in before each load is published.
WAREHOUSE_WORKING_COPY = "WAREHOUSE_WORKING_COPY"
LAKE_DIR = "CRM_PIPELINES_LAKE_DIR"
TIMEZONE = "CRM_PIPELINES_TIMEZONE"
# Folder of the accounts' shared rate-limit windows (one SQLite file per CRM account).
RATE_LIMIT_DIR = "CRM_PIPELINES_RATE_LIMIT_DIR"
# A server holding every account's rate-limit window for workers on several hosts
# (postgresql://...); unset: a SQLite file per account on each host (RATE_LIMIT_DIR).
RATE_LIMIT_URL = "CRM_PIPELINES_RATE_LIMIT_URL"

DEFAULT_WAREHOUSE_URL = "duckdb:///data/warehouse.duckdb"
DEFAULT_LAKE_DIR = "data/lake"
DEFAULT_WAREHOUSE_WORKING_COPY = "data/warehouse.work.duckdb"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_SFTP_FINANCE_DIR = "/outbound/finance"
# Under the system's temporary directory: shared by every process of this host and user.
DEFAULT_RATE_LIMIT_DIR_NAME = "crm-pipelines-rate-limits"


@dataclass(frozen=True)
class Paths:
    """Local paths of the lake and the warehouse file, resolved from the environment."""

    lake_dir: LakePath
    warehouse_url: str

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file the models run in: the warehouse itself, or a PostgreSQL warehouse's working copy."""
        if self.warehouse_url.startswith("duckdb:"):
            return duckdb_path_from_url(self.warehouse_url)
        return working_copy_path()


def working_copy_path() -> Path:
    """``WAREHOUSE_WORKING_COPY``: where the models run when the warehouse is a server."""
    return Path(os.environ.get(WAREHOUSE_WORKING_COPY, DEFAULT_WAREHOUSE_WORKING_COPY))


def duckdb_path_from_url(url: str) -> Path:
    """Return the file path of a ``duckdb:///relative`` or ``duckdb:////absolute`` URL."""
    prefix = "duckdb:///"
    if not url.startswith(prefix):
        raise ValueError(f"{WAREHOUSE_URL} must look like duckdb:///path/to/file.duckdb, got {url!r}")
    return Path(url[len(prefix) :])


def current_paths() -> Paths:
    return Paths(
        lake_dir=lake_root(os.environ.get(LAKE_DIR, DEFAULT_LAKE_DIR)),
        warehouse_url=os.environ.get(WAREHOUSE_URL, DEFAULT_WAREHOUSE_URL),
    )


def current_timezone() -> str:
    return os.environ.get(TIMEZONE, DEFAULT_TIMEZONE)


def rate_limit_dir() -> Path:
    """Where the connector keeps each account's shared rate-limit window: ``CRM_PIPELINES_RATE_LIMIT_DIR``,
    else ``crm-pipelines-rate-limits`` in the system's temporary directory."""
    configured = os.environ.get(RATE_LIMIT_DIR)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / DEFAULT_RATE_LIMIT_DIR_NAME


def rate_limit_url() -> str | None:
    """``CRM_PIPELINES_RATE_LIMIT_URL``: where every host shares the accounts' rate-limit windows, or None."""
    return os.environ.get(RATE_LIMIT_URL) or None


def write_back_enabled() -> bool:
    """Whether syncs write into the target systems (``CRM_PIPELINES_WRITE_BACK=on``) or only plan."""
    return os.environ.get(WRITE_BACK, "").strip().lower() in ("on", "1", "true", "yes")


# Alerts (crm_pipelines/alerts/): e-mail over SMTP and a Slack-compatible webhook. A channel whose
# variables are unset sends nothing; ALERT_SMTP_PASSWORD and the webhook URL are secrets.
ALERT_SMTP_HOST = "ALERT_SMTP_HOST"
ALERT_SMTP_PORT = "ALERT_SMTP_PORT"
ALERT_SMTP_USERNAME = "ALERT_SMTP_USERNAME"
ALERT_SMTP_PASSWORD = "ALERT_SMTP_PASSWORD"
# starttls (default), ssl (implicit TLS), or none (only for a loopback host: a local relay, tests).
ALERT_SMTP_TLS = "ALERT_SMTP_TLS"
ALERT_EMAIL_FROM = "ALERT_EMAIL_FROM"
# Comma-separated recipients.
ALERT_EMAIL_TO = "ALERT_EMAIL_TO"
# https (plain http only to a loopback host).
ALERT_SLACK_WEBHOOK_URL = "ALERT_SLACK_WEBHOOK_URL"
# The Dagster UI as the alerts' readers reach it: a run's link is <DAGSTER_UI_URL>/runs/<run_id>.
DAGSTER_UI_URL = "DAGSTER_UI_URL"

DEFAULT_ALERT_SMTP_PORT = 587
DEFAULT_ALERT_SMTP_SSL_PORT = 465
DEFAULT_ALERT_SMTP_TLS = "starttls"
DEFAULT_DAGSTER_UI_URL = "http://localhost:3000"


def dagster_ui_url() -> str:
    """``DAGSTER_UI_URL`` without its trailing slash: where an alert links a run."""
    return (os.environ.get(DAGSTER_UI_URL) or DEFAULT_DAGSTER_UI_URL).rstrip("/")
