"""``crm-pipelines doctor``: is every configured system reachable and are the credentials accepted?"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from crm_pipelines import settings


@dataclass(frozen=True)
class DoctorRow:
    system: str
    configured: bool
    reachable: bool | None
    authenticated: bool | None
    detail: str
    fix: str

    @property
    def ok(self) -> bool:
        return self.configured and bool(self.reachable) and bool(self.authenticated)


def _missing(*names: str) -> list[str]:
    return [n for n in names if not os.environ.get(n)]


def check_crm(system: str) -> DoctorRow:
    """Reach and authenticate against a declared CRM with the variables its YAML names."""
    from crm_pipelines.connectors.spec import load_system
    from resources.crm_api import CrmApiResource

    spec = load_system(name=system)
    credentials = spec.credential_variables()
    required = (spec.base_url_variable, *(c.variable for c in credentials if c.required))
    if missing := _missing(*required):
        return DoctorRow(system, False, None, None, "not configured", "set " + ", ".join(missing))
    resource = CrmApiResource(system=system, **spec.connection_fields(os.environ))
    check = resource.check()
    return DoctorRow(system, True, check.reachable, check.authenticated, check.detail, check.fix)


def crm_systems() -> list[str]:
    """The CRMs the source catalog reads (sources.yaml, kind crm_api)."""
    from crm_pipelines.sources import load_sources

    return [name for name, source in load_sources().items() if source.kind == "crm_api"]


def crm_connection_variables() -> list[str]:
    """Every environment variable of every declared CRM (base URLs and credentials)."""
    from crm_pipelines.connectors.spec import load_system

    names: list[str] = []
    for system in crm_systems():
        spec = load_system(name=system)
        names += [spec.base_url_variable, *(c.variable for c in spec.credential_variables())]
    return names


def check_erp() -> DoctorRow:
    from resources.erp_database import ErpDatabaseResource

    if missing := _missing(settings.ERP_DATABASE_URL):
        return DoctorRow("erp database", False, None, None, "not configured", "set " + ", ".join(missing))
    try:
        version = ErpDatabaseResource(url=os.environ[settings.ERP_DATABASE_URL]).check()
    except Exception as exc:  # the driver's own message says what is wrong
        text = str(exc).splitlines()[0]
        return DoctorRow(
            "erp database",
            True,
            False,
            False,
            text[:200],
            "check host, port, database name and credentials in ERP_DATABASE_URL",
        )
    return DoctorRow("erp database", True, True, True, version, "")


def check_sftp() -> DoctorRow:
    from crm_pipelines.files.sftp import HostKeyRejected, SFTPAuthError
    from resources.sftp import SFTPResource

    names = (
        settings.SFTP_HOST,
        settings.SFTP_PORT,
        settings.SFTP_USERNAME,
        settings.SFTP_PRIVATE_KEY_PATH,
        settings.SFTP_KNOWN_HOSTS,
    )
    if missing := _missing(*names):
        return DoctorRow("sftp", False, None, None, "not configured", "set " + ", ".join(missing))
    resource = SFTPResource(
        host=os.environ[settings.SFTP_HOST],
        port=int(os.environ[settings.SFTP_PORT]),
        username=os.environ[settings.SFTP_USERNAME],
        private_key_path=os.environ[settings.SFTP_PRIVATE_KEY_PATH],
        known_hosts_path=os.environ[settings.SFTP_KNOWN_HOSTS],
        finance_dir=os.environ.get(settings.SFTP_FINANCE_DIR, settings.DEFAULT_SFTP_FINANCE_DIR),
        timeout_seconds=10,
    )
    try:
        with resource.session() as session:
            files = session.list_files(resource.finance_dir, "*")
    except HostKeyRejected as exc:
        return DoctorRow(
            "sftp",
            True,
            True,
            False,
            str(exc)[:200],
            "add the server's host key to SFTP_KNOWN_HOSTS (ssh-keyscan, verified out of band)",
        )
    except SFTPAuthError as exc:
        return DoctorRow(
            "sftp",
            True,
            True,
            False,
            str(exc)[:200],
            "install the public key of SFTP_PRIVATE_KEY_PATH for SFTP_USERNAME on the server",
        )
    except (OSError, Exception) as exc:  # network errors and missing folders read best in their own words
        return DoctorRow(
            "sftp", True, False, None, str(exc)[:200], "check SFTP_HOST, SFTP_PORT and SFTP_FINANCE_DIR"
        )
    return DoctorRow("sftp", True, True, True, f"{len(files)} file(s) in {resource.finance_dir}", "")


def check_warehouse() -> DoctorRow:
    from crm_pipelines.warehouse.connection import open_warehouse

    url = os.environ.get(settings.WAREHOUSE_URL, settings.DEFAULT_WAREHOUSE_URL)
    try:
        warehouse = open_warehouse(url, lock_timeout=10)
        with warehouse.connect() as con:
            con.execute("SELECT 1")
        with warehouse.read() as reader:
            reader.execute("SELECT 1").fetchall()
    except Exception as exc:
        hint = (
            "WAREHOUSE_URL must be duckdb:///<writable path> or postgresql+psycopg://<user>@<host>/<database>"
        )
        return DoctorRow("warehouse", True, False, None, warehouse_error(exc), hint)
    return DoctorRow("warehouse", True, True, True, warehouse.describe(), "")


def check_lake() -> DoctorRow:
    """Write, read back and remove a probe file in the lake (a folder or a bucket)."""
    from crm_pipelines.alerts.redact import redact
    from crm_pipelines.lake import is_remote, lake_root, write_text

    where = os.environ.get(settings.LAKE_DIR, settings.DEFAULT_LAKE_DIR)
    hint = (
        "a bucket needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server "
        "other than AWS) allowed to write it"
        if is_remote(where)
        else f"{settings.LAKE_DIR} must be a folder this user can write"
    )
    try:
        root = lake_root(where)
        probe = root / "_doctor" / f"probe-{os.getpid()}"
        write_text(probe, "ok")
        read_back = probe.read_text()
        probe.unlink()
    except PermissionError as exc:
        return DoctorRow("lake", True, True, False, redact(str(exc))[:200], hint)
    except Exception as exc:
        return DoctorRow("lake", True, False, None, redact(str(exc))[:200], hint)
    if read_back != "ok":
        return DoctorRow("lake", True, True, True, f"{where}: a probe file read back differently", hint)
    return DoctorRow("lake", True, True, True, f"{where} (written and read back)", "")


def warehouse_error(exc: Exception) -> str:
    """The error in its own words, without the password a connection string may carry."""
    return re.sub(r"(password=|://[^:/@\s]+:)[^@\s]+", r"\1***", str(exc))[:200]


CHECKS: tuple[Callable[[], DoctorRow], ...] = (check_erp, check_sftp, check_warehouse, check_lake)


def run_checks() -> list[DoctorRow]:
    """Run every system's check: each declared CRM, the ERP database, SFTP, the warehouse, the lake; one
    row each."""
    return [check_crm(system) for system in crm_systems()] + [check() for check in CHECKS]
