import dagster as dg

from crm_pipelines.canonical import ENTITIES
from crm_pipelines.definitions import defs


def test_definitions_load_with_every_part_of_the_nightly_sync() -> None:
    definitions = defs()
    keys = {key.to_user_string() for key in definitions.resolve_all_asset_keys()}
    for expected in (
        "salesforce/accounts",
        "hubspot/deals",
        "erp/invoices",
        "finance_sftp/payments",
        "raw/finance_sftp",
        "staging/account",
        "identity/resolution",
        "core/identity",
        "core/invoice",
        "marts/dim_account",
        "marts/dim_contact",
        "marts/fact_opportunity",
        "marts/fact_sales_order",
        "marts/fact_invoice",
        "ops/reconciliation",
    ):
        assert expected in keys
    assert definitions.resolve_job_def("nightly_sync").partitions_def is not None
    assert definitions.resolve_schedule_def("nightly_sync_schedule").cron_schedule == "0 2 * * *"
    for drop in ("invoices", "payments"):  # one arrival sensor per declared file drop
        assert definitions.resolve_sensor_def(f"sftp_file_arrival__finance_sftp__{drop}") is not None
    checks = {key.name for key in definitions.resolve_asset_graph().asset_check_keys}
    assert "quality_suite" in checks


def test_staging_shows_each_column_with_its_type_and_description() -> None:
    spec = (
        defs()
        .resolve_assets_def(dg.AssetKey(["staging", "invoice"]))
        .specs_by_key[dg.AssetKey(["staging", "invoice"])]
    )
    columns = {c.name: c for c in spec.metadata["dagster/column_schema"].columns}
    assert set(columns) == set(ENTITIES["invoice"].names)
    assert all(c.description for c in columns.values())
    # Money, dates and instants are shown as what they are, not as text.
    assert columns["amount_gross"].type.startswith("decimal")
    assert columns["invoice_date"].type == "date"
    assert columns["updated_at"].type.startswith("timestamp")


def test_every_asset_has_an_owner_and_a_link_to_its_code() -> None:
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.owners, key
        assert "dagster/code_references" in spec.metadata, key
