"""Reverse syncs: one asset per declared sync (crm_pipelines/syncs/syncs.yaml), in group reverse_sync.

The work is :func:`crm_pipelines.syncs.run.run_sync`. A sync writes only when
``CRM_PIPELINES_WRITE_BACK=on`` and its run is not a dry run; otherwise it records its plan in
``ops.sync_plan`` (every record with the fields that would change, from which value to which).
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from crm_pipelines import settings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.retries import step_retry_policy
from crm_pipelines.syncs.reconcile import reconcile_syncs, record_outbound
from crm_pipelines.syncs.run import MissingInput, SyncReport, resolve_target, run_sync
from crm_pipelines.syncs.spec import SyncSpec, load_syncs
from resources.lake import LakeResource, WarehouseResource


class SyncConfig(dg.Config):
    """How this run of a sync behaves."""

    dry_run: bool = False  # plan only: write ops.sync_plan, call nothing
    backfill: bool = False  # also send what the sync's first run found already there


def sync_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["reverse_sync", name])


def _client_key(system: str) -> str:
    return "erp_database" if system == "erp" else f"{system}_api"


def _deps(sync: SyncSpec, names_by_declaration: dict[str, list[str]]) -> list[dg.AssetKey]:
    deps = [dg.AssetKey(["core", "identity"])] if sync.source.entity else []
    if sync.model is not None:
        deps += [dg.AssetKey(d.split("/")) for d in sync.model.deps]
    deps += [sync_asset_key(n) for other in sync.after for n in names_by_declaration.get(other, [])]
    return deps


def _metadata(report: SyncReport) -> dict[str, Any]:
    c = report.counts
    return {
        "dry_run": report.dry_run,
        "target": f"{report.system} {report.object_name}",
        "planned": dg.MetadataValue.int(c.planned),
        "created": dg.MetadataValue.int(c.created),
        "updated": dg.MetadataValue.int(c.updated),
        "unchanged": dg.MetadataValue.int(c.unchanged),
        "rejected": dg.MetadataValue.int(c.rejected),
        "baseline": dg.MetadataValue.int(c.baseline),
        "conflicts": dg.MetadataValue.int(c.conflicts),
        "api_calls": dg.MetadataValue.int(c.requests),
        "seconds": c.seconds,
        "without_target": dg.MetadataValue.int(report.without_target),
        "fields": report.fields,
        "plan_sample": dg.MetadataValue.json(
            [
                {
                    "key": p.source_key,
                    "target": p.target_id,
                    "action": p.action,
                    "field": p.field,
                    "from": p.from_value,
                    "to": p.to_value,
                }
                for p in report.sample
            ]
        ),
    }


def _build_sync(sync: SyncSpec, names_by_declaration: dict[str, list[str]]) -> dg.AssetsDefinition:
    resolve_target(sync)  # a declaration that does not fit its system fails when the definitions load
    key = sync_asset_key(sync.name)
    client_key = _client_key(sync.system)

    @dg.asset(
        key=key,
        deps=_deps(sync, names_by_declaration),
        group_name="reverse_sync",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"sql" if sync.system == "erp" else "api"},
        required_resource_keys={client_key, "lake", "warehouse"},
        description=sync.description or f"Sync {sync.declaration} into {sync.system}.",
        metadata={"mode": sync.mode, "target_system": sync.system},
        retry_policy=step_retry_policy(),
        check_specs=[
            dg.AssetCheckSpec(
                "every_row_has_an_outcome",
                asset=key,
                description="planned = created + updated + unchanged + rejected (+ baseline on a first run)",
            )
        ],
    )
    def _sync(
        context: dg.AssetExecutionContext, config: SyncConfig
    ) -> Iterator[dg.MaterializeResult[None] | dg.AssetCheckResult]:
        lake: LakeResource = context.resources.lake
        warehouse: WarehouseResource = context.resources.warehouse
        dry_run = config.dry_run or not settings.write_back_enabled()
        if dry_run and not config.dry_run:
            context.log.info(
                f"{settings.WRITE_BACK} is not 'on': {sync.name} records its plan and writes nothing"
            )
        try:
            report = run_sync(
                sync,
                warehouse=warehouse.get(),
                lake_dir=lake.path,
                partition=context.partition_key,
                run_id=context.run_id,
                client=getattr(context.resources, client_key),
                dry_run=dry_run,
                backfill=config.backfill,
                log=context.log,
            )
        except MissingInput as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc
        yield dg.MaterializeResult(metadata=_metadata(report))
        counts = report.counts
        yield dg.AssetCheckResult(
            check_name="every_row_has_an_outcome",
            passed=counts.adds_up,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "planned": dg.MetadataValue.int(counts.planned),
                "sent": dg.MetadataValue.int(counts.created + counts.updated),
                "unchanged": dg.MetadataValue.int(counts.unchanged),
                "rejected": dg.MetadataValue.int(counts.rejected),
            },
        )

    return _sync


def _build_outbound_reconciliation(sync_keys: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=["ops", "sync_reconciliation"],
        deps=sync_keys,
        group_name="reverse_sync",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb"},
        pool="warehouse",
        description=(
            "Per sync: planned = sent + unchanged + rejected (+ baseline), checked against the state and "
            "the rejections the run wrote (ops.sync_reconciliation)."
        ),
    )
    def sync_reconciliation(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult[None]:
        with warehouse.get().transaction() as con:
            rows = reconcile_syncs(con, run_id=context.run_id)
            record_outbound(con, run_id=context.run_id, partition=context.partition_key, rows=rows)
        table = dg.MetadataValue.md(
            "| sync | planned | sent | unchanged | rejected | baseline | adds up |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {r.sync}{' (dry run)' if r.dry_run else ''} | {r.planned:,} | {r.sent:,} | {r.unchanged:,} | "
                f"{r.rejected:,} | {r.baseline:,} | {'yes' if r.adds_up else 'NO: ' + r.detail} |"
                for r in rows
            )
        )
        bad = [r for r in rows if not r.adds_up]
        if bad:
            raise dg.Failure(
                description="Outbound reconciliation does not add up: "
                + "; ".join(f"{r.sync}: {r.detail}" for r in bad),
                metadata={"syncs": table},
            )
        return dg.MaterializeResult(
            metadata={
                "syncs": table,
                "planned": dg.MetadataValue.int(sum(r.planned for r in rows)),
                "sent": dg.MetadataValue.int(sum(r.sent for r in rows if not r.dry_run)),
                "rejected": dg.MetadataValue.int(sum(r.rejected for r in rows)),
            }
        )

    return sync_reconciliation


def build_reverse_sync_assets() -> list[dg.AssetsDefinition]:
    """One asset per enabled sync, checked against its target system's declaration, and their reconciliation."""
    syncs = [s for s in load_syncs().expand() if s.enabled]
    names: dict[str, list[str]] = {}
    for sync in syncs:
        names.setdefault(sync.declaration, []).append(sync.name)
    assets = [_build_sync(sync, names) for sync in syncs]
    return [*assets, _build_outbound_reconciliation([sync_asset_key(s.name) for s in syncs])]
