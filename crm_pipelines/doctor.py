"""``crm-pipelines doctor``: is every configured system reachable and are the credentials accepted?"""

from __future__ import annotations

import os
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


def _crm(system: str, names: tuple[str, ...], **fields: str) -> DoctorRow:
    from resources.crm_api import CrmApiResource

    if missing := _missing(*names):
        return DoctorRow(system, False, None, None, "not configured", "set " + ", ".join(missing))
    values = {k: os.environ[v] for k, v in fields.items()}
    resource = CrmApiResource(
        system=system,
        base_url=values["base_url"],
        client_id=values.get("client_id"),
        client_secret=values.get("client_secret"),
        access_token=values.get("access_token"),
    )
    check = resource.check()
    return DoctorRow(system, True, check.reachable, check.authenticated, check.detail, check.fix)


def check_salesforce() -> DoctorRow:
    return _crm(
        "salesforce",
        (settings.SALESFORCE_BASE_URL, settings.SALESFORCE_CLIENT_ID, settings.SALESFORCE_CLIENT_SECRET),
        base_url=settings.SALESFORCE_BASE_URL,
        client_id=settings.SALESFORCE_CLIENT_ID,
        client_secret=settings.SALESFORCE_CLIENT_SECRET,
    )


def check_hubspot() -> DoctorRow:
    return _crm(
        "hubspot",
        (settings.HUBSPOT_BASE_URL, settings.HUBSPOT_ACCESS_TOKEN),
        base_url=settings.HUBSPOT_BASE_URL,
        access_token=settings.HUBSPOT_ACCESS_TOKEN,
    )


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
    from crm_pipelines.warehouse.connection import Warehouse

    url = os.environ.get(settings.WAREHOUSE_URL, settings.DEFAULT_WAREHOUSE_URL)
    try:
        with Warehouse(url, lock_timeout=10).connect() as con:
            con.execute("SELECT 1")
    except Exception as exc:
        return DoctorRow(
            "warehouse", True, False, None, str(exc)[:200], "WAREHOUSE_URL must be duckdb:///<writable path>"
        )
    return DoctorRow("warehouse", True, True, True, url, "")


CHECKS: tuple[Callable[[], DoctorRow], ...] = (
    check_salesforce,
    check_hubspot,
    check_erp,
    check_sftp,
    check_warehouse,
)


def run_checks() -> list[DoctorRow]:
    """Run every system's check; one row each."""
    return [check() for check in CHECKS]
