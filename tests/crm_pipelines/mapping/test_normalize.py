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


def test_norm_phone_shortcuts_agree_with_phonenumbers_parse_for_every_country_code_and_region() -> None:
    """norm_phone decides plain digit groups without phonenumbers.parse (its private helpers, in its
    order): for every calling code and every region, it must give exactly what parse gives."""
    import random

    from phonenumbers import PhoneMetadata
    from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, SUPPORTED_REGIONS

    rng = random.Random(13)

    def digits(low: int, high: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(low, high)))

    values: list[str] = []
    countries: list[str | None] = []
    for code in sorted(COUNTRY_CODE_TO_REGION_CODE):
        for lead in ("+", "+", "00", "+"):
            sep = rng.choice(["", " ", "-"])
            values.append(f"{lead}{code}{sep}{rng.choice(['', '0', '00', '1', '9'])}{digits(0, 12)}")
            countries.append(rng.choice(["DE", "US", None, "Atlantis"]))
    for region in sorted(SUPPORTED_REGIONS):
        metadata = PhoneMetadata.metadata_for_region(region, None)
        assert metadata is not None
        for lead in ("", metadata.national_prefix or "0", str(metadata.country_code), "011", "810"):
            number = f"{lead}{digits(1, 12)}"
            values.append(number if rng.random() < 0.5 else f"{number[:3]} {number[3:]}".strip())
            countries.append(region)
    values += ["+0301234567", "+12", "12", "030 1234567", "  +49 30 1234567", "+49  30 1234567"]
    countries += ["DE", "DE", "DE", None, "DE", "DE"]
    con = duckdb.connect()
    register_udfs(con)
    got = [
        row[0]
        for row in con.execute(
            "SELECT norm_phone(v, c) FROM (SELECT unnest(?) AS v, unnest(?) AS c)", [values, countries]
        ).fetchall()
    ]
    expected = [normalize_phone(v, c) for v, c in zip(values, countries, strict=True)]
    assert [(v, c, g) for v, c, g, e in zip(values, countries, got, expected, strict=True) if g != e] == []


def test_norm_email_and_norm_domain_kernels_agree_with_the_python_functions() -> None:
    """Plain ASCII values are normalised by Arrow kernels, the rest in Python: same results."""
    import random
    import string

    rng = random.Random(17)
    alphabet = string.ascii_letters + string.digits + "@.<>:/?-_+ \t" + "ÄéİΣ\u00a0\x1c"
    parts = [
        "mailto:",
        "MAILTO:",
        "<",
        ">",
        "@",
        "www.",
        "www2.",
        "http://",
        "HTTPS://",
        ".",
        ":8080",
        "/p",
        "?q",
    ]
    values: list[str | None] = [None, "", " ", "<>", "mailto:", "www.", "."]
    for _ in range(5_000):
        values.append(
            "".join(
                rng.choice(parts)
                if rng.random() < 0.4
                else "".join(rng.choices(alphabet, k=rng.randint(0, 5)))
                for _ in range(rng.randint(1, 6))
            )
        )
    con = duckdb.connect()
    register_udfs(con)
    rows = con.execute("SELECT norm_email(v), norm_domain(v) FROM unnest(?) AS t(v)", [values]).fetchall()
    assert [r[0] for r in rows] == [normalize_email(v) for v in values]
    assert [r[1] for r in rows] == [normalize_domain(v) for v in values]
