"""Load steps: the only assets that write the warehouse, one transaction each.

raw.<source>__<dataset>   the lake's raw partition, as extracted (crm_pipelines/warehouse/raw.py)
staging.<entity>          valid canonical rows per partition (and staging.xref_identity)
core.*                    current state: golden records, crosswalk, facts (crm_pipelines/warehouse/core.py)
ops.quarantine            every row that did not make it, with the rule and reason
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from crm_pipelines.canonical import FACT_ENTITIES
from crm_pipelines.identity.rules import load_match_rules, review_limit
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.core import load_fact, load_identity, load_order_links
from crm_pipelines.warehouse.raw import load_raw_dataset
from resources.lake import LakeResource, WarehouseResource


def _build_raw_load(source: str, datasets: list[str], kind: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["raw", source],
        deps=[dg.AssetKey([source, d]) for d in datasets],
        group_name="warehouse",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb"},
        pool="warehouse",
        description=f"Lands the partition's {source} extracts in raw.{source}__<dataset>, in one transaction.",
    )
    def _load(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult[None]:
        loaded: dict[str, int] = {}
        files: list[dict[str, Any]] = []
        watermarks: dict[str, str] = {}
        with warehouse.get().transaction() as con:
            for dataset in datasets:
                result = load_raw_dataset(
                    con,
                    lake_dir=lake.path,
                    source=source,
                    dataset=dataset,
                    kind=kind,
                    partition=context.partition_key,
                    run_id=context.run_id,
                    log=context.log,
                )
                files += result.files
                if result.rows is not None:
                    loaded[dataset] = result.rows
                if result.watermark is not None:
                    watermarks[dataset] = result.watermark
        metadata: dict[str, Any] = {f"rows_{d}": dg.MetadataValue.int(n) for d, n in loaded.items()}
        metadata["dagster/row_count"] = dg.MetadataValue.int(sum(loaded.values()))
        if watermarks:
            metadata["watermarks_advanced"] = dg.MetadataValue.json(watermarks)
        if kind == "sftp":
            metadata["files"] = dg.MetadataValue.json(files)
        return dg.MaterializeResult(metadata=metadata)

    return _load


def build_raw_load_assets() -> list[dg.AssetsDefinition]:
    """One raw load per source system."""
    return [
        _build_raw_load(source, list(spec.datasets), spec.kind) for source, spec in load_sources().items()
    ]


@dg.asset(
    key=["core", "identity"],
    deps=[dg.AssetKey(["identity", "resolution"])],
    group_name="warehouse",
    partitions_def=NIGHTLY_PARTITIONS,
    kinds={"duckdb"},
    pool="warehouse",
    description=(
        "Golden accounts and contacts with their crosswalk core.xref_identity, the golden id history "
        "core.golden_id_history and the match review queue ops.match_review, in one transaction."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            "review_queue_size",
            asset=dg.AssetKey(["core", "identity"]),
            description="Warns when ops.match_review holds more pairs than scoring's max_review.",
        )
    ],
)
def core_identity(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult[None] | dg.AssetCheckResult]:
    with warehouse.get().transaction() as con:
        counts = load_identity(
            con, lake_dir=lake.path, partition=context.partition_key, run_id=context.run_id, log=context.log
        )
    yield dg.MaterializeResult(metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()})
    limit = review_limit(load_match_rules())
    queued = counts.get("match_review", 0)
    yield dg.AssetCheckResult(
        check_name="review_queue_size",
        passed=queued <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{queued} pairs await review (limit {limit}): crm-pipelines review",
        metadata={"queued": dg.MetadataValue.int(queued), "limit": dg.MetadataValue.int(limit)},
    )


def _build_fact_load(entity: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["core", entity],
        deps=[dg.AssetKey(["staging", entity])],
        group_name="warehouse",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb"},
        pool="warehouse",
        description=f"Valid {entity} rows into staging.{entity} and merged into core.{entity}, in one transaction.",
    )
    def _load(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult[None]:
        with warehouse.get().transaction() as con:
            counts = load_fact(
                con, lake_dir=lake.path, entity=entity, partition=context.partition_key, run_id=context.run_id
            )
        return dg.MaterializeResult(metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()})

    return _load


@dg.asset(
    key=["core", "order_links"],
    deps=[dg.AssetKey(["core", "sales_order"]), dg.AssetKey(["core", "opportunity"])],
    group_name="warehouse",
    partitions_def=NIGHTLY_PARTITIONS,
    kinds={"duckdb"},
    pool="warehouse",
    description=(
        "Each ERP order and the CRM opportunity its stored reference points to, whatever format the "
        "reference was typed in (core.order_links)."
    ),
)
def core_order_links(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult[None]:
    with warehouse.get().transaction() as con:
        counts = load_order_links(con)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(counts["orders"]),
            "orders_linked_to_an_opportunity": dg.MetadataValue.int(counts["linked"]),
            **{
                f"orders_{change}": dg.MetadataValue.int(counts[f"orders_{change}"])
                for change in ("inserted", "updated", "deleted")
            },
        }
    )


def build_core_load_assets() -> list[dg.AssetsDefinition]:
    """The identity load, one load per fact entity that has mappings, and the order links."""
    mapped = load_mappings().entities
    assets = [core_identity, *(_build_fact_load(e) for e in FACT_ENTITIES if e in mapped)]
    if {"sales_order", "opportunity"} <= set(mapped):
        assets.append(core_order_links)
    return assets
