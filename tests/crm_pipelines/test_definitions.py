import dagster as dg

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


def test_marts_carry_column_descriptions_for_the_ui() -> None:
    spec = (
        defs()
        .resolve_assets_def(dg.AssetKey(["marts", "fact_invoice"]))
        .specs_by_key[dg.AssetKey(["marts", "fact_invoice"])]
    )
    schema = spec.metadata["dagster/column_schema"]
    described = {c.name: c.description for c in schema.columns}
    assert described["amount_open"] == "Gross amount minus payments."
