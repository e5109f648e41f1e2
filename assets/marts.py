"""Mart assets: one per model in crm_pipelines/warehouse/marts.py, merged from core in one transaction."""

import dagster as dg

from crm_pipelines.metadata import warehouse_column_schema
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.warehouse.marts import MARTS, Mart, MissingCoreTable, merge_mart
from resources.lake import WarehouseResource


def _build_mart(mart: Mart) -> dg.AssetsDefinition:
    @dg.asset(
        key=["marts", mart.name],
        deps=[dg.AssetKey(["core", d]) for d in mart.deps],
        group_name="marts",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb"},
        pool="warehouse",
        description=mart.description,
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name, description=text) for name, text in mart.columns.items()]
            ),
            "dagster/table_name": f"marts.{mart.name}",
        },
    )
    def _mart(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult[None]:
        with warehouse.get().transaction() as con:
            try:
                merged = merge_mart(con, mart)
            except MissingCoreTable as exc:
                raise dg.Failure(str(exc)) from exc
            # The built table's own types (decimals, dates, timestamps), shown in the UI.
            columns = warehouse_column_schema(con, schema="marts", table=mart.name, descriptions=mart.columns)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(merged.rows),
                "dagster/column_schema": columns,
                # Only the keys whose row changed are written; a changed model rebuilds the mart.
                "rows_inserted": dg.MetadataValue.int(merged.inserted),
                "rows_updated": dg.MetadataValue.int(merged.updated),
                "rows_deleted": dg.MetadataValue.int(merged.deleted),
                "rebuilt": dg.MetadataValue.bool(merged.rebuilt),
            }
        )

    return _mart


def build_mart_assets() -> list[dg.AssetsDefinition]:
    """One asset per mart."""
    return [_build_mart(m) for m in MARTS]
