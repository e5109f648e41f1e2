"""The one ``dg.Definitions`` of the code location: assets, checks, jobs, schedule, sensor, resources.

Loaded lazily (``@dg.definitions``): importing this module reads no environment and opens nothing.
Connections are wired with ``dg.EnvVar`` and resolved when a run or sensor needs them.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import dagster as dg

from assets.crm_apis import api_resource_key, build_crm_api_assets
from assets.erp_database import build_erp_database_assets
from assets.identity import apply_match_decisions, identity_resolution
from assets.marts import build_mart_assets
from assets.privacy import erase_person
from assets.reconciliation import reconciliation
from assets.reverse_sync import build_reverse_sync_assets
from assets.sftp_files import build_sftp_assets, build_sftp_file_version_assets
from assets.source_monitoring import build_source_checks, with_declared_freshness
from assets.staging import build_staging_assets
from assets.warehouse import build_core_load_assets, build_raw_load_assets
from crm_pipelines import settings
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.jobs import build_sftp_file_jobs, nightly_sync_job
from crm_pipelines.schedules import build_nightly_schedule
from crm_pipelines.sources import load_sources
from resources.crm_api import CrmApiResource
from resources.erp_database import ErpDatabaseResource
from resources.lake import LakeResource, WarehouseResource
from resources.sftp import SFTPResource
from sensors.alerts import alert_on_check_failure, alert_on_run_failure, daily_alert_summary
from sensors.sftp_arrival import build_sftp_arrival_sensors
from sensors.webhook_events import webhook_events_sensor


def _optional_env(name: str) -> dg.EnvVar | None:
    """``dg.EnvVar(name)`` when the variable is set, else None (for optional SFTP settings).

    Only the presence is checked here; the value (possibly a secret) is resolved by Dagster.
    """
    return dg.EnvVar(name) if name in os.environ else None


def crm_api_resource(system: str) -> CrmApiResource:
    """The resource of a declared CRM, its settings wired to the variables its YAML names.

    A credential the auth kind requires becomes ``dg.EnvVar`` (resolved, and checked, when a run
    needs it); an optional one (SugarCRM's client id, which defaults to ``sugar``) only when set.
    """
    spec = load_system(name=system)
    fields: dict[str, Any] = {}
    for credential in spec.credential_variables():
        value = dg.EnvVar(credential.variable) if credential.required else _optional_env(credential.variable)
        if value is not None:
            fields[credential.field] = value
    return CrmApiResource(system=system, base_url=dg.EnvVar(spec.base_url_variable), **fields)


def build_resources() -> dict[str, object]:
    """Every resource, with connection settings and secrets from environment variables."""
    crm_sources = [name for name, source in load_sources().items() if source.kind == "crm_api"]
    return {
        **{api_resource_key(source): crm_api_resource(source) for source in crm_sources},
        "erp_database": ErpDatabaseResource(
            url=dg.EnvVar(settings.ERP_DATABASE_URL), write_url=_optional_env(settings.ERP_WRITE_DATABASE_URL)
        ),
        "sftp": SFTPResource(
            host=dg.EnvVar(settings.SFTP_HOST),
            port=dg.EnvVar.int(settings.SFTP_PORT),
            username=dg.EnvVar(settings.SFTP_USERNAME),
            private_key_path=_optional_env(settings.SFTP_PRIVATE_KEY_PATH),
            private_key_passphrase=_optional_env(settings.SFTP_PRIVATE_KEY_PASSPHRASE),
            password=_optional_env(settings.SFTP_PASSWORD),
            known_hosts_path=_optional_env(settings.SFTP_KNOWN_HOSTS),
            host_key_fingerprint=_optional_env(settings.SFTP_HOST_KEY_FINGERPRINT),
            trust_on_first_use=os.environ.get(settings.SFTP_TRUST_ON_FIRST_USE, "").lower()
            in ("1", "true", "yes"),
            timeout_seconds=float(os.environ.get(settings.SFTP_TIMEOUT_SECONDS, "30")),
            stable_seconds=float(os.environ.get(settings.SFTP_STABLE_SECONDS, "2")),
            finance_dir=os.environ.get(settings.SFTP_FINANCE_DIR, settings.DEFAULT_SFTP_FINANCE_DIR),
        ),
        # Local paths, not secrets: defaults apply when the variables are unset.
        "lake": LakeResource(root=os.environ.get(settings.LAKE_DIR, settings.DEFAULT_LAKE_DIR)),
        "warehouse": WarehouseResource(
            url=os.environ.get(settings.WAREHOUSE_URL, settings.DEFAULT_WAREHOUSE_URL)
        ),
    }


# Who answers for an asset, by group: shown in the UI and used by alert routing. Data engineering
# runs the pipelines; analysts own the marts they query.
OWNERS_BY_GROUP = {"marts": ["team:analytics"]}
DEFAULT_OWNERS = ["team:data-engineering"]


def _with_owner(spec: dg.AssetSpec) -> dg.AssetSpec:
    return spec.replace_attributes(owners=OWNERS_BY_GROUP.get(spec.group_name or "", DEFAULT_OWNERS))


def build_assets() -> list[Any]:
    """Every asset, with its owners and a link to the code that defines it."""
    assets = [
        *build_crm_api_assets(),
        *build_erp_database_assets(),
        *build_sftp_assets(),
        *build_sftp_file_version_assets(),
        *build_raw_load_assets(),
        *build_staging_assets(),
        identity_resolution,
        *build_core_load_assets(),
        *build_mart_assets(),
        reconciliation,
        *build_reverse_sync_assets(),
    ]
    with warnings.catch_warnings():
        # Code references are a beta API that warns once per asset; the links are what we want.
        warnings.simplefilter("ignore", dg.BetaWarning)
        # Each extract and mart with the freshness policy monitoring.yaml declares for it.
        specified = dg.map_asset_specs(with_declared_freshness, dg.map_asset_specs(_with_owner, assets))
        return list(dg.with_source_code_references(specified))


# Definitions built ahead in a fork server's parent (:func:`preload`): each step process forked from
# it starts with them instead of importing and building everything again.
_preloaded: dg.Definitions | None = None


def preload() -> None:
    """Build the definitions once, for the processes forked after this (``crm_pipelines.preload``)."""
    global _preloaded
    _preloaded = build_definitions()
    # Resolving an asset job (its ~150 steps' graph) costs about a second: once here, not per step.
    _preloaded.get_repository_def().get_all_jobs()


@dg.definitions
def defs() -> dg.Definitions:
    return _preloaded if _preloaded is not None else build_definitions()


def build_definitions() -> dg.Definitions:
    """Every asset, check, job, schedule, sensor and resource of the code location."""
    return dg.Definitions(
        assets=build_assets(),
        asset_checks=build_source_checks(),
        jobs=[nightly_sync_job, apply_match_decisions, erase_person, *build_sftp_file_jobs()],
        schedules=[build_nightly_schedule(job_name="nightly_sync", timezone=settings.current_timezone())],
        sensors=[
            *build_sftp_arrival_sensors(),
            webhook_events_sensor,
            alert_on_run_failure,
            alert_on_check_failure,
            daily_alert_summary,
        ],
        resources=build_resources(),
    )
