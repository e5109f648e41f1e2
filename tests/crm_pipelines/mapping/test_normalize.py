import duckdb
import pytest

from crm_pipelines.mapping.normalize import (
    clean_text,
    normalize_country,
    normalize_domain,
    normalize_email,
    normalize_phone,
    register_udfs,
)


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        pytest.param("+49 30 1234567", None, "+49301234567", id="international"),
        pytest.param("030 1234567", "Germany", "+49301234567", id="national-with-country-name"),
        pytest.param("(030) 123-4567", "DE", "+49301234567", id="punctuated"),
        pytest.param("0049 30 1234567", "USA", "+49301234567", id="00-prefix-from-nanp-country"),
        pytest.param("415.555.0100", "United States", "+14155550100", id="us-dots"),
        pytest.param("+1-415-555-0100", None, "+14155550100", id="us-dashes"),
        pytest.param("   ", "DE", None, id="blank"),
        pytest.param(None, "DE", None, id="null"),
    ],
)
def test_phones_become_e164(raw: str | None, country: str | None, expected: str | None) -> None:
    assert normalize_phone(raw, country) == expected


def test_unusable_phone_stays_visible_for_quarantine() -> None:
    assert normalize_phone("12", "DE") == "?12"
    assert normalize_phone("call me", "DE") == "?"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Germany", "DE"),
        ("Deutschland", "DE"),
        ("de", "DE"),
        ("DEU", "DE"),
        ("USA", "US"),
        ("U.S.", "US"),
        ("United States", "US"),
        ("UK", "GB"),
        ("United Kingdom", "GB"),
        ("Netherlands", "NL"),
        ("France", "FR"),
        ("Atlantis", "ATLANTIS"),
        ("XX", "XX"),
        (None, None),
        ("", None),
    ],
)
def test_countries_become_iso2_or_stay_visible(raw: str | None, expected: str | None) -> None:
    assert normalize_country(raw) == expected


def test_email_and_domain() -> None:
    assert normalize_email("  John.Smith@ACME.com ") == "john.smith@acme.com"
    assert normalize_domain("https://www.Acme.com/about?x=1") == "acme.com"
    assert normalize_domain("sales@acme.co.uk") == "acme.co.uk"
    assert normalize_domain("acme.de:8080") == "acme.de"


def test_udfs_are_callable_from_duckdb() -> None:
    con = duckdb.connect()
    register_udfs(con)
    row = con.execute(
        "SELECT norm_phone('030 1234567', 'Deutschland'), norm_country('usa'), norm_email(NULL), norm_text('  a   b ')"
    ).fetchone()
    assert row == ("+49301234567", "US", None, "a b")


def test_sql_norm_text_agrees_with_clean_text_on_every_kind_of_white_space() -> None:
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    values: list[str | None] = [
        None,
        "",
        "   ",
        "plain",
        "  a \t\n b  ",
        "".join(spaces),
        *(f"{s}x{s}{s}y{s}" for s in spaces),
        "a\u200bb",  # zero-width space: not white space to Python, kept
        "Müller\u00a0 GmbH",
    ]
    con = duckdb.connect()
    register_udfs(con)
    got = [row[0] for row in con.execute("SELECT norm_text(v) FROM unnest(?) AS t(v)", [values]).fetchall()]
    assert got == [clean_text(v) for v in values]


def test_arrow_udfs_normalise_repeated_and_null_values_like_the_python_functions() -> None:
    values = ["  USA", "Germany", None, "  USA", "Atlantis", None, "de", "Germany"]
    emails = [" <A@B.com>", None, "mailto:X@Y.de", " <A@B.com>"]
    con = duckdb.connect()
    register_udfs(con)
    countries = [
        r[0] for r in con.execute("SELECT norm_country(v) FROM unnest(?) AS t(v)", [values]).fetchall()
    ]
    assert countries == [normalize_country(v) for v in values]
    mails = [r[0] for r in con.execute("SELECT norm_email(v) FROM unnest(?) AS t(v)", [emails]).fetchall()]
    assert mails == [normalize_email(v) for v in emails]
