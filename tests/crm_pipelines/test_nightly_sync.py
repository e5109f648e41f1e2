"""The whole nightly sync, in-process, against the sandbox's real servers on loopback."""

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import duckdb
import pytest

from crm_pipelines import settings
from crm_pipelines.definitions import defs
from crm_pipelines.sources import load_sources
from crm_pipelines_sandbox.run import Sandbox
from crm_pipelines_sandbox.systems import sandbox_crm, sandbox_crms
from tests.crm_pipelines.warehouse_digest import fingerprint

DAY = dt.date(2026, 11, 25)
MARTS = ("dim_account", "dim_contact", "fact_opportunity", "fact_sales_order", "fact_invoice")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("nightly")
    monkeypatch = pytest.MonkeyPatch()
    box = Sandbox(root / "sandbox", contacts=800, seed=7, as_of=DAY)
    try:
        for name, value in box.start().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(settings.LAKE_DIR, str(root / "lake"))
        # Re-running a night must change nothing; the syncs plan here (their writes are tested in
        # tests/crm_pipelines/syncs), so the sources a re-run reads are the ones the first run read.
        monkeypatch.setenv(settings.WRITE_BACK, "off")
        monkeypatch.setenv(settings.WAREHOUSE_URL, f"duckdb:///{root}/warehouse.duckdb")
        yield box
    finally:
        box.stop()
        monkeypatch.undo()


def run_nightly() -> dg.ExecuteInProcessResult:
    return (
        defs()
        .resolve_job_def("nightly_sync")
        .execute_in_process(
            partition_key=DAY.isoformat(), instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )
    )


def warehouse(sandbox: Sandbox) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(sandbox.root.parent / "warehouse.duckdb"), read_only=True)


def files_rows(sandbox: Sandbox) -> int:
    with warehouse(sandbox) as con:
        row = con.execute("SELECT count(*) FROM raw.finance_sftp__invoices").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def first_run(sandbox: Sandbox) -> dg.ExecuteInProcessResult:
    return run_nightly()


def test_the_nightly_sync_loads_every_mart(sandbox: Sandbox, first_run: dg.ExecuteInProcessResult) -> None:
    failures = [e.message for e in first_run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert first_run.success, failures
    with warehouse(sandbox) as con:
        for mart in MARTS:
            assert con.execute(f"SELECT count(*) FROM marts.{mart}").fetchall()[0][0] > 0, mart
        # A fact without a golden account is explained: its customer record sits in quarantine.
        unexplained = con.execute(
            "SELECT count(*) FROM marts.fact_invoice AS f JOIN core.invoice AS i ON i.record_id = f.invoice_id "
            "WHERE f.account_id IS NULL "
            "AND i.account_record_id NOT IN (SELECT record_id FROM ops.quarantine WHERE entity = 'account')"
        ).fetchall()[0][0]
        assert unexplained == 0


def test_every_row_is_loaded_merged_or_quarantined(
    sandbox: Sandbox, first_run: dg.ExecuteInProcessResult
) -> None:
    with warehouse(sandbox) as con:
        rows = con.execute(
            "SELECT source, entity, extracted, loaded, merged, quarantined, adds_up, detail FROM ops.reconciliation "
            "WHERE run_id = ?",
            [first_run.run_id],
        ).fetchall()
    by_key = {(r[0], r[1]): r for r in rows}
    for key in [
        ("salesforce", "account"),
        ("hubspot", "contact"),
        ("erp", "invoice"),
        ("finance_sftp", "payment"),
        ("all", "account"),
    ]:
        assert key in by_key, key
    for source, entity, extracted, loaded, merged, quarantined, adds_up, detail in rows:
        assert adds_up, (source, entity, detail)
        assert extracted == loaded + merged + quarantined
    assert (
        sum(r[4] for r in rows if r[0] != "all" and r[1] in ("account", "contact")) > 0
    )  # duplicates merged
    # An 'all' row is the sum of its entity's rows, column by column.
    for (source, entity), total in by_key.items():
        if source == "all":
            parts = [r for r in rows if r[1] == entity and r[0] != "all"]
            assert total[2:6] == tuple(sum(r[i] for r in parts) for i in range(2, 6)), entity


def test_invoice_and_payment_totals_match_from_each_file_to_the_facts(
    sandbox: Sandbox, first_run: dg.ExecuteInProcessResult
) -> None:
    [check] = [e for e in first_run.get_asset_check_evaluations() if e.check_name == "control_totals_match"]
    assert check.passed, check.description
    with warehouse(sandbox) as con:
        totals = con.execute(
            "SELECT source, entity, file, layer, value FROM ops.control_totals "
            "WHERE run_id = ? AND measure IN ('count', 'amount_gross', 'amount')",
            [first_run.run_id],
        ).fetchall()
        mismatched = con.execute(
            "SELECT count(*) FROM ops.control_totals WHERE run_id = ? AND difference <> 0", [first_run.run_id]
        ).fetchone()
    assert mismatched == (0,)
    files = {(source, entity, file) for source, entity, file, _, _ in totals if source == "finance_sftp"}
    # Each of the day's files, by its version.
    assert {entity for _, entity, _ in files} == {"invoice", "payment"}
    assert all("@" in file for _, _, file in files), files
    # The billing file's quarantined rows are accounted for by their amounts too.
    quarantined = [
        v for s, e, _, layer, v in totals if s == "finance_sftp" and layer.startswith("quarantine")
    ]
    assert sum(quarantined) > 0


def test_bad_rows_are_quarantined_with_the_reason(
    sandbox: Sandbox, first_run: dg.ExecuteInProcessResult
) -> None:
    assert sandbox.layout is not None
    summary = json.loads(sandbox.layout.truth_summary.read_text())
    with warehouse(sandbox) as con:
        quarantined = dict(
            con.execute(
                "SELECT source || '.' || entity, count(DISTINCT record_id) FROM ops.quarantine GROUP BY 1"
            ).fetchall()
        )
        line_rule = con.execute(
            "SELECT reason FROM ops.quarantine WHERE source = 'finance_sftp' AND rule = 'field_count'"
        ).fetchall()
        # The payments drop is XML: a <Payment> missing an element is quarantined by its line.
        xml_rule = con.execute(
            "SELECT reason FROM ops.quarantine WHERE source = 'finance_sftp' AND entity = 'payment' "
            "AND rule = 'missing_field'"
        ).fetchall()
        xml_rows = con.execute("SELECT count(*) FROM raw.finance_sftp__payments").fetchone()
    assert quarantined.get("erp.payment", 0) >= summary["datasets"]["erp.payments"]["invalid"]
    assert quarantined.get("finance_sftp.invoice", 0) >= 1
    # A CSV line with the wrong number of fields names its line.
    assert line_rule
    assert all("line" in reason for (reason,) in line_rule)
    assert xml_rule
    assert all(reason.startswith("line ") for (reason,) in xml_rule)
    assert xml_rows is not None
    assert xml_rows[0] > 0


def test_running_again_changes_nothing(sandbox: Sandbox, first_run: dg.ExecuteInProcessResult) -> None:
    with warehouse(sandbox) as con:
        before = fingerprint(con)
        first = con.execute(
            "SELECT source, entity, extracted, loaded, merged, quarantined FROM ops.reconciliation WHERE run_id = ? "
            "ORDER BY 1, 2",
            [first_run.run_id],
        ).fetchall()
    second_run = run_nightly()
    assert second_run.success
    # The day's files were moved to processed/ by the first run; they still count as arrived.
    assert all(check.passed for check in second_run.get_asset_check_evaluations())
    with warehouse(sandbox) as con:
        assert fingerprint(con) == before
        second = con.execute(
            "SELECT source, entity, extracted, loaded, merged, quarantined FROM ops.reconciliation WHERE run_id = ? "
            "ORDER BY 1, 2",
            [second_run.run_id],
        ).fetchall()
        (files,) = con.execute(
            "SELECT count(*), count(DISTINCT (path, sha256)) FROM ops.file_ingest"
        ).fetchall()
    assert second == first
    # The day's files were landed by the first run; the re-run still reports the rows the day holds.
    for run in (first_run, second_run):
        [extract] = run.asset_materializations_for_node("finance_sftp__invoices")
        assert extract.metadata["rows"] == dg.MetadataValue.int(int(files_rows(sandbox)))
    assert files[0] == files[1] == 2  # each SFTP file version recorded once


def test_golden_records_match_the_ground_truth(
    sandbox: Sandbox, first_run: dg.ExecuteInProcessResult
) -> None:
    """Pairwise precision and recall of the account and contact clusters against the generator's truth."""
    assert sandbox.layout is not None
    with warehouse(sandbox) as con:
        con.execute(f"CREATE TEMP TABLE truth AS SELECT * FROM read_parquet('{sandbox.layout.truth}')")
        scores = {}
        # The other CRMs hold some of the same companies and people: their records must join the
        # same golden records (a dataset whose source the sync does not read simply has no pairs).
        others = {
            kind: [f"{s}.{sandbox_crm(s).kinds[kind]}" for s in sandbox_crms()]
            for kind in ("account", "contact")
        }
        for entity, datasets in (
            ("account", ("salesforce.Account", "hubspot.companies", "erp.customers", *others["account"])),
            ("contact", ("salesforce.Contact", "hubspot.contacts", *others["contact"])),
        ):
            sources = ", ".join(f"'{d}'" for d in datasets)
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE pairs_{entity} AS
                WITH labelled AS (
                    SELECT x.golden_id, t.entity_id, x.record_id
                    FROM core.xref_identity AS x
                    JOIN truth AS t
                      ON t.dataset IN ({sources})
                     AND split_part(t.dataset, '.', 1) || ':' || t.source_id = x.record_id
                    WHERE x.entity = '{entity}' AND t.entity_id IS NOT NULL
                )
                SELECT a.golden_id = b.golden_id AS predicted, a.entity_id = b.entity_id AS actual
                FROM labelled AS a JOIN labelled AS b ON a.record_id < b.record_id
                WHERE a.golden_id = b.golden_id OR a.entity_id = b.entity_id
            """)
            tp, fp, fn = con.execute(
                f"SELECT count(*) FILTER (WHERE predicted AND actual), count(*) FILTER (WHERE predicted AND NOT actual),"
                f" count(*) FILTER (WHERE actual AND NOT predicted) FROM pairs_{entity}"
            ).fetchall()[0]
            scores[entity] = (tp / max(tp + fp, 1), tp / max(tp + fn, 1))
    for entity, (precision, recall) in scores.items():
        assert precision >= 0.95, (entity, scores)
        assert recall >= 0.85, (entity, scores)
    # And the other CRMs' records are in those pairs: every read source took part.
    with warehouse(sandbox) as con:
        linked = {row[0] for row in con.execute("SELECT DISTINCT source FROM core.xref_identity").fetchall()}
    crm_sources = {name for name, spec in load_sources().items() if spec.kind == "crm_api"}
    assert crm_sources <= linked


def test_every_mart_column_is_described_in_the_ui_and_in_the_warehouse(
    sandbox: Sandbox, first_run: dg.ExecuteInProcessResult
) -> None:
    """What an analyst sees: each column of each built mart has a description and its real type."""
    materialized = {
        e.asset_key.path[-1]: e.event_specific_data.materialization.metadata  # type: ignore[union-attr]
        for e in first_run.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and e.asset_key is not None
        and e.asset_key.path[0] == "marts"
    }
    definitions = defs()
    with warehouse(sandbox) as con:
        for mart in MARTS:
            built = {
                str(name): (str(kind), comment)
                for name, kind, comment in con.execute(
                    "SELECT column_name, data_type, comment FROM duckdb_columns() "
                    "WHERE schema_name = 'marts' AND table_name = ?",
                    [mart],
                ).fetchall()
            }
            declared = definitions.resolve_assets_def(dg.AssetKey(["marts", mart])).specs_by_key[
                dg.AssetKey(["marts", mart])
            ]
            described = {c.name: c.description for c in declared.metadata["dagster/column_schema"].columns}
            assert set(described) == set(built), mart
            assert all(described.values()), mart
            assert all(comment for _, comment in built.values()), mart
            schema = materialized[mart]["dagster/column_schema"].value
            assert isinstance(schema, dg.TableSchema), mart
            shown = {c.name: c.type for c in schema.columns}
            assert shown == {name: kind.lower() for name, (kind, _) in built.items()}, mart
