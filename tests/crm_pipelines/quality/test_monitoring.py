"""The freshness and volume declarations: validated with the bad key named, and wired into Dagster."""

from datetime import timedelta

import dagster as dg
import pytest

from assets.source_monitoring import FRESHNESS_CHECK, VOLUME_BLOCK_CHECK, VOLUME_WARN_CHECK
from crm_pipelines.definitions import defs
from crm_pipelines.quality.monitoring import (
    DEFAULT_MONITORING,
    MonitoringError,
    load_monitoring,
    parse_monitoring,
)

TEXT = DEFAULT_MONITORING.read_text(encoding="utf-8")


def _parse(text: str) -> None:
    parse_monitoring(
        text, origin="monitoring.yaml", sources=["hubspot", "finance_sftp"], marts=["dim_account"]
    )


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (("warn_below: -50%", "warn_below: 50"), "defaults.source.volume.warn_below"),
        (
            ("block_below: -80%", "block_below: -40%"),
            "defaults.source.volume: block_below must be a deeper fall",
        ),
        (("changed_within: null", "changed_within: soon"), "sources.finance_sftp.changed_within"),
        (("marts: {}", "marts: {dim_acount: {}}"), "marts.dim_acount: not a declared source or mart"),
        (("  finance_sftp:\n", "  finance_sftp:\n    colour: red\n"), "sources.finance_sftp.colour"),
        (
            ("warn_after: 74h", "warn_after: 99h"),
            "sources.finance_sftp.materialized: warn_after must be shorter",
        ),
    ],
)
def test_a_bad_declaration_names_its_key(edit: tuple[str, str], named: str) -> None:
    _parse(TEXT)  # the shipped file is valid
    with pytest.raises(MonitoringError, match=named.replace(".", r"\.")):
        _parse(TEXT.replace(*edit))


def test_a_source_entry_overrides_the_defaults_key_by_key() -> None:
    monitoring = load_monitoring()
    sftp, hubspot = monitoring.source("finance_sftp"), monitoring.source("hubspot")
    assert sftp.changed_within is None
    assert sftp.materialized.fail_after == timedelta(hours=98)
    assert sftp.volume == hubspot.volume  # not overridden: the default
    assert hubspot.volume.warn_below == -0.5
    assert hubspot.volume.block_below == -0.8


def test_every_extract_and_mart_carries_its_freshness_policy_and_the_extracts_their_checks() -> None:
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    monitoring = load_monitoring()
    for key, declared in (
        (dg.AssetKey(["hubspot", "contacts"]), monitoring.source("hubspot").materialized),
        (dg.AssetKey(["erp", "invoices"]), monitoring.source("erp").materialized),
        (dg.AssetKey(["finance_sftp", "payments"]), monitoring.source("finance_sftp").materialized),
        (dg.AssetKey(["marts", "fact_invoice"]), monitoring.mart("fact_invoice").materialized),
    ):
        policy = graph.get(key).freshness_policy
        assert policy == dg.FreshnessPolicy.time_window(
            fail_window=declared.fail_after, warn_window=declared.warn_after
        ), key
    checks = graph.asset_check_keys
    for key in (dg.AssetKey(["salesforce", "leads"]), dg.AssetKey(["erp", "customers"])):
        for name in (VOLUME_WARN_CHECK, VOLUME_BLOCK_CHECK):
            assert dg.AssetCheckKey(key, name) in checks
    assert dg.AssetCheckKey(dg.AssetKey(["raw", "salesforce"]), FRESHNESS_CHECK) in checks
    # finance_sftp declares changed_within: null (payments come in on business days only).
    assert dg.AssetCheckKey(dg.AssetKey(["raw", "finance_sftp"]), FRESHNESS_CHECK) not in checks
    # The nightly job runs them (the blocking one before the loads that read the extract).
    nightly = definitions.resolve_job_def("nightly_sync")
    selected = nightly.asset_layer.asset_graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey(["hubspot", "contacts"]), VOLUME_BLOCK_CHECK) in selected
