"""Value normalisation used by the mappings: phones to E.164, e-mails, countries, domains.

Each function takes one raw value and returns the normalised value, or ``None`` when there is
nothing usable. A value that cannot be recognised is returned unchanged (upper-cased for codes) so
that the quality rules quarantine it with the offending value in the reason, instead of it
silently becoming NULL. :func:`register_udfs` exposes them to DuckDB as vectorised Arrow UDFs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

import duckdb
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pycountry

# Spellings that pycountry's fuzzy search gets wrong or does not know.
_COUNTRY_ALIASES = {
    "USA": "US",
    "U.S.": "US",
    "U.S.A.": "US",
    "UNITED STATES OF AMERICA": "US",
    "AMERICA": "US",
    "UK": "GB",
    "U.K.": "GB",
    "GREAT BRITAIN": "GB",
    "ENGLAND": "GB",
    "SCOTLAND": "GB",
    "WALES": "GB",
    "DEUTSCHLAND": "DE",
    "BRD": "DE",
    "ALLEMAGNE": "DE",
    "FRANKREICH": "FR",
    "ESPAÑA": "ES",
    "ESPANA": "ES",
    "NEDERLAND": "NL",
    "HOLLAND": "NL",
    "THE NETHERLANDS": "NL",
    "SCHWEIZ": "CH",
    "SUISSE": "CH",
    "ÖSTERREICH": "AT",
    "OESTERREICH": "AT",
    "ITALIA": "IT",
    "BELGIË": "BE",
    "BELGIQUE": "BE",
    "SVERIGE": "SE",
    "DANMARK": "DK",
    "NORGE": "NO",
    "POLSKA": "PL",
}
_WS = re.compile(r"\s+")
_DOMAIN_PREFIX = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:www\d?\.)?", re.IGNORECASE)


def clean_text(value: str | None) -> str | None:
    """Trim and collapse white space; empty strings become None."""
    if value is None:
        return None
    text = _WS.sub(" ", str(value)).strip()
    return text or None


@lru_cache(maxsize=65_536)
def normalize_country(value: str | None) -> str | None:
    """ISO 3166-1 alpha-2 code for a country name or code; unknown values come back upper-cased."""
    text = clean_text(value)
    if text is None:
        return None
    key = text.upper()
    if key in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[key]
    if len(key) == 2 and pycountry.countries.get(alpha_2=key):
        return key
    if len(key) == 3 and (country := pycountry.countries.get(alpha_3=key)):
        return str(country.alpha_2)
    for match in (
        pycountry.countries.get(name=text),
        pycountry.countries.get(official_name=text),
        pycountry.countries.get(common_name=text),
    ):
        if match:
            return str(match.alpha_2)
    return key


def normalize_phone(value: str | None, country: str | None = None) -> str | None:
    """E.164 form of a phone number, using the record's country for national formats.

    Unparseable numbers come back as their digits with a leading ``?`` so that the quality rule
    quarantines them with the original value visible.
    """
    text = clean_text(value)
    if text is None:
        return None
    region = normalize_country(country) if country else None
    if region is not None and len(region) != 2:
        region = None
    return _phone_in_region(text, region)


@lru_cache(maxsize=262_144)
def _phone_in_region(text: str, region: str | None) -> str:
    # Keyed by what the result depends on (the trimmed text and the region), not by the raw values:
    # 'Germany', 'DE' and ' de ' share one parse of the same number.
    candidate = text
    if candidate.startswith("00"):
        # International prefix written as 00 works from most countries but not NANP (011).
        candidate = "+" + candidate[2:]
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return "?" + re.sub(r"\D", "", text)
    # Fewer than six national digits is an extension or a typo, never a reachable number.
    if len(str(parsed.national_number)) < 6 or not phonenumbers.is_possible_number(parsed):
        return "?" + re.sub(r"\D", "", text)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(value: str | None) -> str | None:
    """Lower-case, trimmed e-mail address (validity is a quality rule, not decided here)."""
    text = clean_text(value)
    if text is None:
        return None
    text = text.strip("<>").replace("mailto:", "")
    return text.lower() or None


def normalize_domain(value: str | None) -> str | None:
    """Bare lower-case domain from a URL, a domain or an e-mail address."""
    text = clean_text(value)
    if text is None:
        return None
    text = text.lower()
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    text = _DOMAIN_PREFIX.sub("", text)
    text = text.split("/", 1)[0].split("?", 1)[0].split(":", 1)[0].strip(".")
    return text or None


# clean_text as SQL: DuckDB runs it vectorised over every text column instead of a Python call per
# value. The class is exactly what Python's ``\s`` and ``str.strip`` treat as white space (RE2's own
# ``\s`` is ASCII only), so the two agree on every string.
_WHITESPACE_CLASS = "[" + "".join(f"\\x{{{c:x}}}" for c in range(0x110000) if chr(c).isspace()) + "]"
NORM_TEXT_MACRO = (
    "CREATE OR REPLACE MACRO norm_text(x) AS "
    f"nullif(trim(regexp_replace(x, '{_WHITESPACE_CLASS}+', ' ', 'g'), ' '), '')"
)


def _arrow_udf1(fn: Callable[[str | None], str | None]) -> Callable[[pa.Array], pa.Array]:
    def udf(values: pa.Array) -> pa.Array:
        # Each distinct value of the batch is normalised once, then spread back over its rows; a
        # null stays null (every normaliser maps None to None).
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = pc.dictionary_encode(values)
        normalised = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], type=pa.string())
        return normalised.take(encoded.indices)

    return udf


def _phone_udf(values: pa.Array, countries: pa.Array) -> pa.Array:
    # Distinct (number, country) pairs of the batch once each; _phone_in_region caches across batches.
    pairs: dict[tuple[str | None, str | None], str | None] = {}
    out: list[str | None] = []
    for v, c in zip(values.to_pylist(), countries.to_pylist(), strict=True):
        key = (v, c)
        if key not in pairs:
            pairs[key] = normalize_phone(v, c)
        out.append(pairs[key])
    return pa.array(out, type=pa.string())


def register_udfs(con: duckdb.DuckDBPyConnection) -> None:
    """Make the normalisers callable from DuckDB SQL as ``norm_phone(value, country)`` etc.

    ``norm_text`` is a SQL macro (:data:`NORM_TEXT_MACRO`, the same result as :func:`clean_text`);
    the others are vectorised Arrow UDFs that normalise each distinct value of a batch once.
    """
    con.execute(NORM_TEXT_MACRO)
    varchar = duckdb.sqltypes.VARCHAR
    for name, fn in (
        ("norm_country", normalize_country),
        ("norm_email", normalize_email),
        ("norm_domain", normalize_domain),
    ):
        # The stubs do not know the "arrow" UDF form.
        con.create_function(  # type: ignore[call-overload]
            name,
            _arrow_udf1(fn),
            [varchar],
            varchar,
            type="arrow",
            null_handling="special",
            side_effects=False,
        )
    con.create_function(  # type: ignore[call-overload]
        "norm_phone",
        _phone_udf,
        [varchar, varchar],
        varchar,
        type="arrow",
        null_handling="special",
        side_effects=False,
    )
