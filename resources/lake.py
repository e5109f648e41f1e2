"""Where the local lake and the warehouse live."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from crm_pipelines.warehouse.connection import Warehouse, open_warehouse


class LakeResource(dg.ConfigurableResource["LakeResource"]):
    """The local Parquet lake that extracts write and transforms read.

    Attributes:
        root: Folder of the lake (``CRM_PIPELINES_LAKE_DIR``, default ``data/lake``).
    """

    root: str

    @property
    def path(self) -> Path:
        return Path(self.root)


class WarehouseResource(dg.ConfigurableResource["WarehouseResource"]):
    """The analysts' warehouse: a DuckDB file with schemas raw, staging, core, marts and ops.

    Attributes:
        url: ``duckdb:///path/to/warehouse.duckdb`` (``WAREHOUSE_URL``).
    """

    url: str

    def get(self) -> Warehouse:
        """The warehouse handle; connections are opened per load, under the single-writer lock."""
        return open_warehouse(self.url)
