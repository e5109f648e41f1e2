"""Where the local lake and the warehouse live."""

from __future__ import annotations

import dagster as dg

from crm_pipelines.lake import LakePath, lake_root
from crm_pipelines.warehouse.connection import Warehouse, open_warehouse


class LakeResource(dg.ConfigurableResource["LakeResource"]):
    """The Parquet lake that extracts write and transforms read: a local folder or an S3 bucket.

    Attributes:
        root: Folder or ``s3://bucket/prefix`` of the lake (``CRM_PIPELINES_LAKE_DIR``, default
            ``data/lake``).
    """

    root: str

    @property
    def path(self) -> LakePath:
        """The lake's root: a local folder, or a bucket's prefix (``s3://...``)."""
        return lake_root(self.root)


class WarehouseResource(dg.ConfigurableResource["WarehouseResource"]):
    """The analysts' warehouse: a DuckDB file with schemas raw, staging, core, marts and ops.

    Attributes:
        url: ``duckdb:///path/to/warehouse.duckdb`` (``WAREHOUSE_URL``).
    """

    url: str

    def get(self) -> Warehouse:
        """The warehouse handle; connections are opened per load, under the single-writer lock."""
        return open_warehouse(self.url)
