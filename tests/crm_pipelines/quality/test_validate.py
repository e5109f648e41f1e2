"""Row-level validation: each kind of bad row is quarantined with the right rule and a readable reason.

GX is slow to import and each validation has a fixed cost, so every case of an entity goes into one
table validated once (module-scoped fixture); the parametrized tests then look up their own row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from crm_pipelines.canonical import ENTITIES, QUARANTINE
from crm_pipelines.quality.rules import RuleSet, load_rules, parse_rules
from crm_pipelines.quality.validate import (
    QualityError,
    TableValidation,
    validate_batches,
    validate_table,
)

UPDATED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _valid_row(entity: str, key: str) -> dict[str, Any]:
    """A canonical row that passes every packaged rule."""
    source = {"account": "salesforce", "contact": "hubspot", "opportunity": "salesforce"}.get(entity, "erp")
    lineage = {"record_id": f"{source}:{key}", "source": source, "source_id": key, "updated_at": UPDATED}
    rows: dict[str, dict[str, Any]] = {
        "account": {
            "name": "Acme GmbH",
            "domain": "acme.de",
            "phone": "+4930123456",
            "phone_digits": "4930123456",
            "phone_quality": "e164",
            "email": "info@acme.de",
            "street": "Hauptstr. 1",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE",
            "industry": "Software",
            "vat_number": "DE123456789",
            "annual_revenue": Decimal("1500000.00"),
        },
        "contact": {
            "account_record_id": "hubspot:1",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@acme.de",
            "phone": "+4930123457",
            "phone_digits": "4930123457",
            "phone_quality": "e164",
            "title": "CTO",
            "country": "DE",
        },
        "opportunity": {
            "account_record_id": "salesforce:1",
            "name": "Acme renewal",
            "stage": "proposal",
            "amount": Decimal("12000.00"),
            "currency": "EUR",
            "close_date": date(2026, 12, 31),
            "is_closed": False,
            "is_won": False,
        },
        "sales_order": {
            "order_number": "SO-1",
            "account_record_id": "erp:1",
            "order_date": date(2026, 11, 1),
            "currency": "EUR",
            "status": "open",
            "amount": Decimal("990.00"),
            "line_count": 3,
            "crm_opportunity_ref": None,
        },
        "invoice": {
            "invoice_number": "INV-1",
            "account_record_id": "erp:1",
            "order_number": "SO-1",
            "invoice_date": date(2026, 11, 1),
            "due_date": date(2026, 12, 1),
            "currency": "EUR",
            "amount_net": Decimal("100.00"),
            "amount_tax": Decimal("19.00"),
            "amount_gross": Decimal("119.00"),
            "status": "open",
        },
        "payment": {
            "invoice_number": "INV-1",
            "payment_date": date(2026, 11, 20),
            "amount": Decimal("119.00"),
            "currency": "EUR",
            "method": "bank_transfer",
        },
    }
    return {**lineage, **rows[entity]}


@dataclass(frozen=True)
class Case:
    entity: str
    key: str
    changes: dict[str, Any]
    rules: tuple[str, ...]  # every rule the row must fail, in rule order; () for a row that must pass
    reason: str | None = None  # exact reason of the first rule


def case(
    entity: str, key: str, changes: dict[str, Any], rules: tuple[str, ...] = (), reason: str | None = None
) -> Any:
    return pytest.param(Case(entity, key, changes, rules, reason), id=f"{entity}-{key}")


CASES = [
    # Rules every entity shares.
    case("account", "ok", {}),
    case(
        "account",
        "no-record-id",
        {"record_id": None},
        ("record_id_required",),
        "record_id is null: every row needs '<source>:<source_id>'",
    ),
    case(
        "account",
        "bad-record-id",
        {"record_id": "acme-42"},
        ("record_id_format",),
        "record_id \"acme-42\" must look like '<source>:<source_id>'",
    ),
    case("account", "no-source-id", {"source_id": None}, ("source_id_required",)),
    # account
    case(
        "account",
        "no-name",
        {"name": None},
        ("account_name_required",),
        "name is null: an account needs a company name",
    ),
    case(
        "account",
        "bad-email",
        {"email": "info(at)acme.de"},
        ("account_email_format",),
        'email "info(at)acme.de" is not a valid lower-case e-mail address',
    ),
    case("account", "email-trailing-newline", {"email": "info@acme.de\n"}, ("account_email_format",)),
    case("account", "bad-phone", {"phone": "030 123456"}, ("account_phone_e164",)),
    case("account", "bad-domain", {"domain": "https://acme.de/"}, ("account_domain_format",)),
    case("account", "bad-vat", {"vat_number": "de 123 456"}, ("account_vat_number_format",)),
    case(
        "account",
        "country-not-iso2",
        {"country": "Germany"},
        ("account_country_iso2",),
        'country "Germany" is not an ISO 3166-1 alpha-2 code',
    ),
    case(
        "account",
        "country-unrecognised",
        {"country": None, "_raw": json.dumps({"Id": "x", "BillingCountry": "Germny"})},
        ("account_country_unrecognised",),
        'country is null although the source gave "Germny": not a recognised country',
    ),
    case(
        "account",
        "country-unrecognised-escaped",
        {"country": None, "_raw": json.dumps({"country": "Österreich?"})},
        ("account_country_unrecognised",),
        'country is null although the source gave "Österreich?": not a recognised country',
    ),
    case("account", "country-not-given", {"country": None, "_raw": json.dumps({"BillingCountry": None})}),
    case(
        "account",
        "negative-revenue",
        {"annual_revenue": Decimal("-12.50")},
        ("account_annual_revenue_non_negative",),
        "annual_revenue -12.50 must be >= 0",
    ),
    # contact
    case("contact", "ok", {}),
    case("contact", "email-only", {"last_name": None}),
    case("contact", "last-name-only", {"email": None}),
    case(
        "contact",
        "anonymous",
        {"email": None, "last_name": None},
        ("contact_email_or_last_name",),
        "contact has neither an email nor a last_name",
    ),
    # A phone that could not be made E.164 is flagged, not quarantined: the row flows with its digits.
    case(
        "contact",
        "unparsable-phone",
        {"phone": None, "phone_digits": "03012345678", "phone_quality": "unparsable"},
    ),
    case("contact", "no-phone", {"phone": None, "phone_digits": None, "phone_quality": None}),
    case("contact", "upper-case-email", {"email": "Ada@Acme.de"}, ("contact_email_format",)),
    case("contact", "bad-country", {"country": "XX"}, ("contact_country_iso2",)),
    # opportunity
    case("opportunity", "ok", {}),
    case(
        "opportunity",
        "unknown-stage",
        {"stage": "won"},
        ("opportunity_stage_known",),
        'stage "won" must be one of prospecting, qualification, proposal, negotiation, closed_won, closed_lost',
    ),
    case("opportunity", "no-stage", {"stage": None}, ("opportunity_stage_required",)),
    case(
        "opportunity",
        "negative-amount",
        {"amount": Decimal("-12.50")},
        ("opportunity_amount_non_negative",),
        "amount -12.50 must be >= 0",
    ),
    case(
        "opportunity",
        "amount-unparseable",
        {"amount": None, "currency": None, "_raw": json.dumps({"Amount": "12,5k", "CurrencyIsoCode": "EUR"})},
        ("opportunity_amount_unparseable",),
        'amount is null although the source gave "12,5k": not a number',
    ),
    case(
        "opportunity",
        "amount-number-too-big",
        {"amount": None, "currency": None, "_raw": '{"amount": 1e40}'},
        ("opportunity_amount_unparseable",),
        'amount is null although the source gave "1e40": not a number',
    ),
    case("opportunity", "no-amount-no-currency", {"amount": None, "currency": None}),
    case(
        "opportunity",
        "amount-without-currency",
        {"currency": None},
        ("opportunity_currency_required",),
        "currency is null although amount is 12000.00",
    ),
    case(
        "opportunity",
        "bad-currency",
        {"currency": "EURO"},
        ("opportunity_currency_iso4217",),
        'currency "EURO" is not an active ISO 4217 code',
    ),
    case(
        "opportunity",
        "close-date-unparseable",
        {"close_date": None, "_raw": json.dumps({"CloseDate": "31/02/2026"})},
        ("opportunity_close_date_unparseable",),
        'close_date is null although the source gave "31/02/2026": not a date',
    ),
    case("opportunity", "no-close-date", {"close_date": None}),
    case(
        "opportunity",
        "won-but-open",
        {"is_won": True, "is_closed": False},
        ("opportunity_won_implies_closed",),
        "is_won is true but is_closed is false: only a closed opportunity can be won",
    ),
    # sales_order
    case("sales_order", "ok", {}),
    case("sales_order", "no-order-date", {"order_date": None}, ("sales_order_date_required",)),
    case("sales_order", "no-account", {"account_record_id": None}, ("sales_order_account_required",)),
    case("sales_order", "lower-case-currency", {"currency": "eur"}, ("sales_order_currency_iso4217",)),
    case(
        "sales_order",
        "unknown-status",
        {"status": "Shipped"},
        ("sales_order_status_known",),
        'status "Shipped" must be one of open, shipped, invoiced, cancelled',
    ),
    case("sales_order", "negative-line-count", {"line_count": -1}, ("sales_order_line_count_non_negative",)),
    # invoice
    case("invoice", "ok", {}),
    case(
        "invoice",
        "due-before-invoice",
        {"due_date": date(2026, 10, 1)},
        ("invoice_due_after_invoice_date",),
        "due_date 2026-10-01 is before invoice_date 2026-11-01",
    ),
    case("invoice", "due-same-day", {"due_date": date(2026, 11, 1)}),
    case("invoice", "no-invoice-date", {"invoice_date": None}, ("invoice_date_required",)),
    case(
        "invoice",
        "gross-off-by-2-cents",
        {"amount_gross": Decimal("119.02")},
        ("invoice_gross_equals_net_plus_tax",),
        "amount_gross 119.02 must equal amount_net 100.00 + amount_tax 19.00 (off by 0.02, tolerance 0.01)",
    ),
    case("invoice", "gross-off-by-1-cent", {"amount_gross": Decimal("119.01")}),
    case(
        "invoice",
        "negative-net",
        {"amount_net": Decimal("-100.00"), "amount_gross": Decimal("-81.00")},
        ("invoice_amount_net_non_negative", "invoice_amount_gross_non_negative"),
        "amount_net -100.00 must be >= 0",
    ),
    case("invoice", "test-currency", {"currency": "XTS"}, ("invoice_currency_iso4217",)),
    case("invoice", "status-upper-case", {"status": "PAID"}, ("invoice_status_known",)),
    case("invoice", "no-status", {"status": None}, ("invoice_status_required",)),
    # payment
    case("payment", "ok", {}),
    case(
        "payment",
        "unknown-method",
        {"method": "paypal"},
        ("payment_method_known",),
        'method "paypal" must be one of bank_transfer, card, direct_debit, cheque',
    ),
    case("payment", "no-amount", {"amount": None}, ("payment_amount_required",)),
    case("payment", "negative-amount", {"amount": Decimal("-1.00")}, ("payment_amount_non_negative",)),
    case("payment", "no-payment-date", {"payment_date": None}, ("payment_date_required",)),
    case("payment", "no-invoice-number", {"invoice_number": None}, ("payment_invoice_number_required",)),
    case("payment", "no-currency", {"currency": None}, ("payment_currency_required",)),
]


def _table(entity: str, rows: list[dict[str, Any]], *, raw: bool = True) -> pa.Table:
    schema = ENTITIES[entity]
    if raw:
        schema = schema.append(pa.field("_raw", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema)


@dataclass(frozen=True)
class EntityRun:
    result: TableValidation
    positions: dict[str, int]  # case key -> row position


@pytest.fixture(scope="module")
def runs() -> dict[str, EntityRun]:
    """One validation per entity over all its cases (GX has a fixed cost per validation)."""
    out: dict[str, EntityRun] = {}
    for entity in ENTITIES:
        cases = [p.values[0] for p in CASES if p.values[0].entity == entity]
        rows = []
        for c in cases:
            row = _valid_row(entity, c.key)
            row["_raw"] = None
            row.update(c.changes)
            rows.append(row)
        result = validate_table(entity=entity, table=_table(entity, rows))
        out[entity] = EntityRun(result, {c.key: i for i, c in enumerate(cases)})
    return out


@pytest.mark.parametrize("c", CASES)
def test_case(c: Case, runs: dict[str, EntityRun]) -> None:
    run = runs[c.entity]
    row = _valid_row(c.entity, c.key) | c.changes
    quarantine_id = row["record_id"] or f"{c.entity}#row{run.positions[c.key]}"
    quarantined = [q for q in run.result.quarantine.to_pylist() if q["record_id"] == quarantine_id]
    valid_ids = run.result.valid.column("source_id").to_pylist()

    assert tuple(q["rule"] for q in quarantined) == c.rules
    if not c.rules:
        assert row["source_id"] in valid_ids
        return
    assert row["source_id"] not in valid_ids
    if c.reason is not None:
        assert quarantined[0]["reason"] == c.reason
    for q in quarantined:
        assert q["entity"] == c.entity
        assert q["source"] == row["source"]
        record = json.loads(q["record"])
        # The record is the source row when the mapping kept one, else the canonical row.
        if row.get("_raw"):
            assert record == json.loads(row["_raw"])
        else:
            assert record["source_id"] == row["source_id"]


def test_counts_add_up(runs: dict[str, EntityRun]) -> None:
    for entity, run in runs.items():
        summary = run.result.summary
        bad = {c.values[0].key for c in CASES if c.values[0].entity == entity and c.values[0].rules}
        assert summary.rows_in == len(run.positions)
        assert summary.rows_quarantined == len(bad)
        assert summary.rows_valid + summary.rows_quarantined == summary.rows_in
        assert run.result.valid.num_rows == summary.rows_valid
        assert summary.quarantine_records == run.result.quarantine.num_rows
        distinct = {(q["record_id"]) for q in run.result.quarantine.to_pylist()}
        assert len(distinct) == summary.rows_quarantined
        assert (
            sum(s.unexpected for s in summary.rules.values() if s.severity == "error")
            == summary.quarantine_records
        )
        assert run.result.quarantine.schema.equals(QUARANTINE)
        # Valid rows keep the input schema, _raw included.
        assert run.result.valid.schema.equals(ENTITIES[entity].append(pa.field("_raw", pa.string())))
    # A row failing two rules is quarantined twice but counted once.
    invoice = runs["invoice"].result
    assert invoice.summary.quarantine_records == invoice.summary.rows_quarantined + 1


def test_summary_is_json_for_dagster_metadata(runs: dict[str, EntityRun]) -> None:
    summary = runs["invoice"].result.summary
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["entity"] == "invoice"
    assert data["suite"] == "crm_pipelines.invoice"
    assert data["rows_in"] == summary.rows_in
    # 1 row in a dozen fails each rule: below any sane mostly, but within the tolerated failures
    # that keep a tiny feed with one bad row from stopping the load.
    assert load_rules().tolerated_failures >= 1
    assert data["success"] is True
    rule = data["rules"]["invoice_due_after_invoice_date"]
    declared = {r.name: r.mostly for r in load_rules().rules_for("invoice")}
    assert rule["unexpected"] == 1
    assert rule["mostly"] == declared["invoice_due_after_invoice_date"]
    assert rule["success"] is True
    assert rule["tolerated_failures"] == load_rules().tolerated_failures
    assert rule["unexpected_percent"] == pytest.approx(100 / rule["evaluated"], abs=1e-3)
    assert data["failed_rules"] == []
    gx_stats = data["gx_statistics"]
    assert gx_stats["evaluated_expectations"] == len(data["rules"])
    assert gx_stats["successful_expectations"] + gx_stats["unsuccessful_expectations"] == len(data["rules"])
    assert gx_stats["great_expectations_version"].startswith("1.")


def test_unparsable_phone_is_a_warning_not_a_quarantine(runs: dict[str, EntityRun]) -> None:
    result = runs["contact"].result
    valid = {r["source_id"]: r for r in result.valid.to_pylist()}
    row = valid["unparsable-phone"]
    assert (row["phone"], row["phone_digits"], row["phone_quality"]) == (None, "03012345678", "unparsable")
    assert not [q for q in result.quarantine.to_pylist() if q["rule"] == "contact_phone_parsable"]
    summary = result.summary.to_dict()
    assert summary["warnings"]["contact_phone_parsable"] == 1
    rule = summary["rules"]["contact_phone_parsable"]
    assert (rule["severity"], rule["unexpected"], rule["success"]) == ("warn", 1, True)
    assert "contact_phone_parsable" not in summary["failed_rules"]


def test_a_feed_of_unparsable_phones_still_passes() -> None:
    rows = []
    for i in range(20):
        row = _valid_row("contact", str(i))
        row.update(phone=None, phone_digits=f"030{i:08d}", phone_quality="unparsable")
        rows.append(row)
    result = validate_table(entity="contact", table=_table("contact", rows, raw=False))
    assert result.summary.success
    assert result.valid.num_rows == 20
    assert result.summary.warnings["contact_phone_parsable"] == 20


def test_duplicate_record_ids_are_all_quarantined() -> None:
    rows = [_valid_row("payment", "1"), _valid_row("payment", "1"), _valid_row("payment", "2")]
    result = validate_table(entity="payment", table=_table("payment", rows, raw=False))
    assert [q["rule"] for q in result.quarantine.to_pylist()] == ["record_id_unique"] * 2
    assert (
        result.quarantine.column("reason").to_pylist()[0]
        == 'record_id "erp:1" occurs more than once in the batch'
    )
    assert result.valid.column("record_id").to_pylist() == ["erp:2"]
    assert result.summary.rows_quarantined == 2


# --- mostly: failing rows are quarantined either way; the suite fails only past the threshold -------

MOSTLY_RULES = """
version: 1
entities:
  account:
    rules:
      - name: account_name_required
        expectation: expect_column_values_to_not_be_null
        kwargs: {column: name}
        mostly: 0.95
        reason: "name is null"
"""


@pytest.fixture(scope="module")
def mostly_rules() -> RuleSet:
    return parse_rules(data=MOSTLY_RULES)


def _accounts(count: int, bad: int) -> pa.Table:
    rows = [_valid_row("account", str(i)) | ({"name": None} if i < bad else {}) for i in range(count)]
    return _table("account", rows, raw=False)


@pytest.mark.parametrize(("bad", "success"), [(0, True), (1, True), (5, True), (6, False), (10, False)])
def test_mostly_decides_suite_success(bad: int, success: bool, mostly_rules: RuleSet) -> None:
    result = validate_table(entity="account", table=_accounts(100, bad), rules=mostly_rules)
    summary = result.summary
    assert summary.success is success
    assert summary.rows_quarantined == bad
    assert result.valid.num_rows == 100 - bad
    assert summary.rules["account_name_required"].unexpected_percent == pytest.approx(bad)
    # One chunk: our feed-level verdict is GX's own.
    assert result.batch_results[0].gx_success is success


def test_mostly_applies_to_the_whole_feed_not_each_chunk(mostly_rules: RuleSet) -> None:
    table = _accounts(100, 1)
    batches = table.to_batches(max_chunksize=7)  # small input batches are regrouped into chunks of 10
    run = validate_batches(entity="account", batches=batches, rules=mostly_rules, batch_rows=10)
    results = list(run)
    assert [r.rows_in for r in results] == [10] * 10
    assert [r.gx_success for r in results] == [False] + [True] * 9  # 1 in 10 misses mostly=0.95
    summary = run.summary
    assert summary.success is True  # 1 in 100 does not
    assert summary.batches == 10
    assert summary.rules["account_name_required"].gx_failed_batches == 1
    assert summary.gx_statistics["batches_failed"] == 1
    assert summary.rows_in == 100
    assert summary.rows_valid == 99
    # Valid rows come out in input order, in the input schema.
    valid = pa.Table.from_batches([r.valid for r in results])
    assert valid.schema.equals(table.schema)
    assert valid.column("source_id").to_pylist() == [str(i) for i in range(1, 100)]


def test_record_without_raw_is_the_canonical_row_and_source_can_be_overridden(mostly_rules: RuleSet) -> None:
    result = validate_table(entity="account", table=_accounts(3, 1), rules=mostly_rules, source="sandbox")
    (q,) = result.quarantine.to_pylist()
    assert q["source"] == "sandbox"
    assert q["record_id"] == "salesforce:0"
    record = json.loads(q["record"])
    assert record["annual_revenue"] == "1500000.00"
    assert record["updated_at"] == UPDATED.isoformat()
    assert record["name"] is None


def test_empty_input(mostly_rules: RuleSet) -> None:
    run = validate_batches(entity="account", batches=[], rules=mostly_rules)
    assert list(run) == []
    assert run.summary.rows_in == 0
    assert run.summary.success is True


def test_summary_needs_a_finished_run(mostly_rules: RuleSet) -> None:
    run = validate_batches(entity="account", batches=[], rules=mostly_rules)
    with pytest.raises(RuntimeError, match="to the end"):
        run.summary  # noqa: B018


def test_missing_column_is_named(mostly_rules: RuleSet) -> None:
    table = _accounts(3, 0).drop_columns(["name"])
    with pytest.raises(QualityError, match="no column 'name'"):
        list(validate_batches(entity="account", batches=[table], rules=mostly_rules))


def test_unknown_entity() -> None:
    with pytest.raises(QualityError, match="unknown entity 'unicorn'"):
        validate_batches(entity="unicorn", batches=[])


def test_a_small_feed_with_one_bad_row_is_not_a_broken_feed() -> None:
    """1 bad row in 13 is below mostly=0.95, but within the tolerated failures: quarantined, suite passes."""
    from crm_pipelines.quality.rules import load_rules
    from crm_pipelines.quality.validate import RuleStats

    tolerated = load_rules().tolerated_failures
    assert tolerated >= 1
    small = RuleStats(
        expectation="x",
        columns=["amount"],
        mostly=0.95,
        tolerated_failures=tolerated,
        evaluated=13,
        unexpected=1,
    )
    assert small.success
    broken = RuleStats(
        expectation="x",
        columns=["amount"],
        mostly=0.95,
        tolerated_failures=tolerated,
        evaluated=13,
        unexpected=tolerated + 1,
    )
    assert not broken.success


def test_the_rules_as_sql_decide_exactly_as_great_expectations() -> None:
    """Every packaged rule compiles to SQL; on rows mixing every case, with values and nulls swapped
    between rows, the SQL predicates quarantine, count and judge exactly as GX's pandas engine."""
    import random

    rules = load_rules()
    rng = random.Random(3)
    for entity in ENTITIES:
        base = []
        for c in (p.values[0] for p in CASES if p.values[0].entity == entity):
            row = _valid_row(entity, c.key) | {"_raw": None} | c.changes
            base.append(row)
        if not base:
            continue
        rows = []
        for _ in range(300):
            row = dict(rng.choice(base))
            for key in row:
                roll = rng.random()
                row[key] = None if roll < 0.08 else rng.choice(base)[key] if roll < 0.25 else row[key]
            rows.append(row)
        table = _table(entity, rows)
        runs = [validate_batches(entity=entity, batches=[table], rules=rules) for _ in range(2)]
        assert runs[0]._sql is not None, f"{entity}: a packaged rule does not compile to SQL"
        runs[1]._sql = None  # the same suite validated by GX on a pandas DataFrame
        results = [list(run) for run in runs]
        sql, gx = (run.summary.to_dict() for run in runs)
        for summary in (sql, gx):
            summary.pop("seconds"), summary.pop("gx_seconds")
        assert sql == gx
        for a, b in zip(*results, strict=True):
            assert a.valid.equals(b.valid)
            assert a.quarantine.equals(b.quarantine)
            assert a.gx_success == b.gx_success


@pytest.mark.parametrize(
    "regex",
    [
        *sorted(
            {r.kwargs["regex"] for e in ENTITIES for r in load_rules().rules_for(e) if "regex" in r.kwargs}
        ),
        *(
            r"^a.b$",
            r"^\d+\s*\S?$",
            r"^x{2,}y{,3}\Z",
            r"^[^\s]+\Z",
            r"^[]a]+\Z",
            r"^\w+\Z",
            r"^[[:alpha:]]+\Z",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")  # [[:alpha:]], on purpose
def test_regex_rules_match_as_python_re_search(regex: str) -> None:
    """Regex rules match ASCII values with RE2 where the pattern translates exactly, the rest with
    Python's re (as GX's pandas engine does): the verdicts are re.search's, white space, a final
    newline and non-ASCII digits included."""
    import random
    import re
    import string

    from crm_pipelines.quality.validate import _regex_search

    rng = random.Random(regex)
    alphabet = string.ascii_letters[:6] + "0189xyz.-_:+%'@" + " \t\n\x0b\x0c\r\x1c\x1f" + "é٣\u00a0"
    parts = ["sf:", "+49", "ada@", "acme.de", "xn--ab", ".com", "DE12", "ab", "\n"]
    values: list[str | None] = [None, "", "\n", "a\nb", "ab\n", "sf:x\n", "+4930123456\n"]
    for _ in range(3_000):
        values.append(
            "".join(
                rng.choice(parts) if rng.random() < 0.5 else rng.choice(alphabet)
                for _ in range(rng.randint(0, 8))
            )
        )
    search = re.compile(regex).search
    expected = [None if v is None else search(v) is not None for v in values]
    from crm_pipelines.quality.suites import re2_for_ascii

    assert _regex_search(pa.array(values, pa.string()), regex, re2_for_ascii(regex)).to_pylist() == expected


def _contacts(count: int, *, without_email: int, anonymous: int) -> pa.Table:
    """``count`` contacts: ``without_email`` of them have no e-mail, and the first ``anonymous`` of
    those no family name either (one of them a blank one)."""
    rows = []
    for i in range(count):
        row = _valid_row("contact", str(i)) | {"email": f"p{i}@acme.de"}
        if i < without_email:
            row["email"] = None
        if i < anonymous:
            row["last_name"] = "  " if i == 0 else None
        rows.append(row)
    return _table("contact", rows, raw=False)


@pytest.mark.parametrize(
    ("anonymous", "success"),
    # 6 of 200 (3%) pass mostly 0.95, 12 (6%) do not; the 11 contacts without an e-mail were the
    # 300,000-contact benchmark's Pipedrive leads after the syncs filled in the others' e-mails:
    # judged over those 11 alone, 6 without a family name had failed the feed.
    [(6, True), (12, False)],
)
def test_a_contact_needs_an_email_or_a_family_name_judged_over_the_whole_feed(
    anonymous: int, success: bool
) -> None:
    result = validate_table(
        entity="contact", table=_contacts(200, without_email=max(11, anonymous), anonymous=anonymous)
    )

    stats = result.summary.rules["contact_email_or_last_name"]
    assert (stats.evaluated, stats.unexpected, stats.success) == (200, anonymous, success)
    quarantined = [q for q in result.quarantine.to_pylist() if q["rule"] == "contact_email_or_last_name"]
    assert sorted(q["record_id"] for q in quarantined) == sorted(f"hubspot:{i}" for i in range(anonymous))
    assert {q["reason"] for q in quarantined} == {"contact has neither an email nor a last_name"}
