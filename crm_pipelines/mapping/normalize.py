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
from typing import Any

import duckdb
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pycountry
from phonenumbers import phonenumberutil

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
    return _phone_in_region(text, _region(country))


def _region(country: str | None) -> str | None:
    """The region phonenumbers reads a national number in: the country's alpha-2 code, or None."""
    region = normalize_country(country) if country else None
    return region if region is not None and len(region) == 2 else None


# Phones written as digits in groups split by single spaces or hyphens, after "+" or "00"
# (international) or without (national, read in the record's country). For them the steps of
# phonenumbers.parse that depend on the digits are taken directly (:func:`_e164_international`,
# :func:`_e164_national`); anything else goes through :func:`_phone_in_region`.
_INTERNATIONAL = r"^(?:\+|00)[0-9]+(?:[ -][0-9]+)*$"
_NATIONAL = r"^[0-9]+(?:[ -][0-9]+)*$"
_POSSIBLE = (
    phonenumberutil.ValidationResult.IS_POSSIBLE,
    phonenumberutil.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
)
_NOT_SHORTENED = (
    phonenumberutil.ValidationResult.TOO_SHORT,
    phonenumberutil.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    phonenumberutil.ValidationResult.INVALID_LENGTH,
)
UNPARSABLE = "?"
_MIN_NSN = phonenumberutil._MIN_LENGTH_FOR_NSN


# phonenumbers.parse spends most of its time finding the number in free text and normalising it
# character by character. For plain ASCII digits only its steps that depend on the digits are left:
# they are taken below in parse's own order with its own metadata and helpers (private ones: the
# tests compare these functions with parse over every country code), then the checks of
# _phone_in_region. Each returns the E.164 number, UNPARSABLE for a number that is certainly not one
# (the caller writes "?<digits>"), or None where parse would take a path not taken here.


@lru_cache(maxsize=4_096)
def _length_check(code: int, region: str, length: int) -> Any:
    # phonenumbers' _test_number_length for the UNKNOWN type reads nothing but the length.
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None:  # the callers checked
        raise ValueError(f"no phone metadata for +{code} in {region}")
    return phonenumberutil._test_number_length("0" * length, metadata)


@lru_cache(maxsize=1_024)
def _national_prefix(code: int, region: str) -> tuple[Any, re.Pattern[str] | None]:
    # The metadata parse reads and its national prefix pattern, as _maybe_strip_national_prefix_carrier_code
    # compiles it (None: that function returns the number unchanged).
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None:  # the callers checked
        raise ValueError(f"no phone metadata for +{code} in {region}")
    prefix = metadata.national_prefix_for_parsing
    return metadata, re.compile(prefix) if prefix else None


@lru_cache(maxsize=1_024)
def _region_metadata(region: str) -> tuple[Any, re.Pattern[str]]:
    # A region's metadata and its international (IDD) prefix pattern, as parse compiles it.
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    idd = metadata.international_prefix if metadata is not None else None
    return metadata, re.compile(idd if idd is not None else "NonMatch")


@lru_cache(maxsize=1_024)
def _main_region(code: int) -> str:
    return str(phonenumberutil.region_code_for_country_code(code))


def _e164_from(code: int, region: str, national: str) -> str:
    # parse() once the country code is known (``region``: whose metadata parse reads): the national
    # prefix (kept when stripping it leaves an impossible length), the NSN length limits; then
    # _phone_in_region's checks.
    if len(national) < _MIN_NSN:
        return UNPARSABLE
    metadata, national_prefix = _national_prefix(code, region)
    # Most numbers do not start with the national prefix; then stripping leaves them as they are.
    if national_prefix is not None and national_prefix.match(national):
        _, stripped, _ = phonenumberutil._maybe_strip_national_prefix_carrier_code(national, metadata)
        if _length_check(code, region, len(stripped)) not in _NOT_SHORTENED:
            national = stripped
    if len(national) > phonenumberutil._MAX_LENGTH_FOR_NSN:
        return UNPARSABLE
    # parse() keeps leading zeros (italian_leading_zero), so the national significant number is the
    # digits as they are; the "six national digits" check counts the integer, without them.
    if len(national.lstrip("0") or "0") < 6:
        return UNPARSABLE
    # is_possible_number reads the main region of the country code.
    if _length_check(code, _main_region(code), len(national)) not in _POSSIBLE:
        return UNPARSABLE
    return f"+{code}{national}"


def _e164_after_idd(digits: str) -> str | None:
    # The country code follows an international prefix; the default region plays no further part.
    if len(digits) <= _MIN_NSN:
        return UNPARSABLE
    code, national = phonenumberutil._extract_country_code(digits)
    if (
        code == 0
        or phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, _main_region(code)) is None
    ):
        return None
    return _e164_from(code, _main_region(code), national)


@lru_cache(maxsize=262_144)
def _e164_international(digits: str) -> str | None:
    """E.164 of ``+<digits>`` as :func:`_phone_in_region` gives it, whatever the record's country.

    Args:
        digits: The ASCII digits after the plus sign (or after ``00``).

    Returns:
        The E.164 number, :data:`UNPARSABLE`, or None (no known country code: parse would read the
        digits as a national number of the record's country).
    """
    if len(digits) > 20:
        return None
    return _e164_after_idd(digits)


@lru_cache(maxsize=262_144)
def _e164_national(digits: str, region: str | None) -> str | None:
    """E.164 of ASCII ``digits`` written without a plus sign, read in ``region``.

    Args:
        digits: The digits, not starting with ``00`` (that is :func:`_e164_international`'s).
        region: ISO alpha-2 code of the record's country, or None.

    Returns:
        The E.164 number, :data:`UNPARSABLE`, or None.
    """
    if len(digits) < 3 or len(digits) > 20 or digits.startswith("00"):
        return None
    if region is None or region not in phonenumberutil.SUPPORTED_REGIONS:
        return UNPARSABLE  # a national number needs a known region
    metadata, idd = _region_metadata(region)
    if metadata is None:
        return None
    stripped, number = phonenumberutil._parse_prefix_as_idd(idd, digits)
    if stripped:
        result = _e164_after_idd(number)
        return UNPARSABLE if result is None else result  # no retry without a plus sign
    code = metadata.country_code
    if code is None:
        return None
    prefix = str(code)
    if digits.startswith(prefix):
        general = metadata.general_desc
        _, potential, _ = phonenumberutil._maybe_strip_national_prefix_carrier_code(
            digits[len(prefix) :], metadata
        )
        if (
            not phonenumberutil._match_national_number(digits, general, False)
            and phonenumberutil._match_national_number(potential, general, False)
        ) or _length_check(code, region, len(digits)) == phonenumberutil.ValidationResult.TOO_LONG:
            # The country code came off the number: parse reads its main region from here on.
            number_region = _main_region(code)
            if phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, number_region) is None:
                return None
            return _e164_from(code, number_region, potential)
    return _e164_from(code, region, digits)


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


# Values of printable ASCII without white space: for them the e-mail and domain normalisers are
# Arrow kernels (no white space to collapse; ASCII lower-casing is Python's); others go through Python.
_PLAIN_ASCII = r"^[!-~]+$"


def _by_kernels(
    fn: Callable[[str | None], str | None], kernels: Callable[[pa.Array], pa.Array]
) -> Callable[[pa.Array], pa.Array]:
    python = _arrow_udf1(fn)

    def udf(values: pa.Array) -> pa.Array:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        values = values.cast(pa.string())
        plain = pc.fill_null(pc.match_substring_regex(values, _PLAIN_ASCII), False)
        out = kernels(pc.if_else(plain, values, None))
        out = pc.if_else(pc.equal(out, ""), None, out)
        rest = pc.and_(pc.invert(plain), pc.is_valid(values))
        if pc.any(rest).as_py():
            out = pc.replace_with_mask(out, rest, python(values.filter(rest)))
        return out

    return udf


def _email_kernels(values: pa.Array) -> pa.Array:
    # normalize_email: strip('<>'), replace('mailto:', ''), lower().
    return pc.ascii_lower(pc.replace_substring(pc.ascii_trim(values, characters="<>"), "mailto:", ""))


def _domain_kernels(values: pa.Array) -> pa.Array:
    # normalize_domain: lower(); after the last '@'; no scheme, no 'www.'; up to '/', '?' or ':'; strip('.').
    text = pc.replace_substring_regex(pc.ascii_lower(values), "^.*@", "")
    text = pc.replace_substring_regex(text, r"^(?:[a-z][a-z0-9+.-]*://)?(?:www[0-9]?\.)?", "")
    return pc.ascii_trim(pc.replace_substring_regex(text, "[/?:].*$", ""), characters=".")


def _phone_udf(values: pa.Array, countries: pa.Array) -> pa.Array:
    """``norm_phone`` over a batch: each distinct number parsed once, then spread back over its rows.

    Numbers written as plain digit groups are keyed by their digits (and, for national ones, the
    record's region) and decided by :func:`_e164_international` / :func:`_e164_national`; the rest
    by their distinct (number, country) pairs through :func:`normalize_phone`.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(countries, pa.ChunkedArray):
        countries = countries.combine_chunks()
    values = values.cast(pa.string())
    # Matched on the value as it is: a number with white space around it takes the slow path.
    international = pc.fill_null(pc.match_substring_regex(values, _INTERNATIONAL), False)
    national = pc.fill_null(pc.match_substring_regex(values, _NATIONAL), False)
    digits = pc.replace_substring_regex(values, "[^0-9]", "")
    # '00' is the international prefix: what follows is the country code.
    after_plus = pc.if_else(pc.starts_with(values, "+"), digits, pc.utf8_slice_codeunits(digits, 2))
    encoded = pc.dictionary_encode(pc.if_else(international, after_plus, None))
    decided = [_e164_international(d) for d in encoded.dictionary.to_pylist()]
    out = pa.array(decided, type=pa.string()).take(encoded.indices)
    if pc.any(national).as_py():
        # The record's region, once per distinct country value.
        by_country = pc.dictionary_encode(countries.cast(pa.string()))
        regions = pa.array([_region(c) for c in by_country.dictionary.to_pylist()], type=pa.string())
        region = regions.take(by_country.indices)
        key = pc.binary_join_element_wise(digits, pc.fill_null(region, ""), "|")
        encoded = pc.dictionary_encode(pc.if_else(national, key, None))
        decided = []
        for k in encoded.dictionary.to_pylist():
            number, _, code = k.partition("|")
            decided.append(_e164_national(number, code or None))
        out = pc.coalesce(out, pa.array(decided, type=pa.string()).take(encoded.indices))
    unparsable = pc.equal(out, UNPARSABLE)
    out = pc.if_else(unparsable, pc.binary_join_element_wise(UNPARSABLE, digits, ""), out)
    # What is left: odd punctuation, white space, numbers the shortcuts leave to phonenumbers.
    rest = pc.and_(pc.is_null(out), pc.is_valid(values))
    if pc.any(rest).as_py():
        positions = pc.indices_nonzero(rest)
        pairs: dict[tuple[str | None, str | None], str | None] = {}
        slow: list[str | None] = []
        for v, c in zip(
            values.take(positions).to_pylist(), countries.take(positions).to_pylist(), strict=True
        ):
            key_pair = (v, c)
            if key_pair not in pairs:
                pairs[key_pair] = normalize_phone(v, c)
            slow.append(pairs[key_pair])
        out = pc.replace_with_mask(out, rest, pa.array(slow, type=pa.string()))
    return out


def register_udfs(con: duckdb.DuckDBPyConnection) -> None:
    """Make the normalisers callable from DuckDB SQL as ``norm_phone(value, country)`` etc.

    ``norm_text`` is a SQL macro (:data:`NORM_TEXT_MACRO`, the same result as :func:`clean_text`);
    the others are vectorised Arrow UDFs that normalise each distinct value of a batch once.
    """
    con.execute(NORM_TEXT_MACRO)
    varchar = duckdb.sqltypes.VARCHAR
    for name, udf in (
        ("norm_country", _arrow_udf1(normalize_country)),
        ("norm_email", _by_kernels(normalize_email, _email_kernels)),
        ("norm_domain", _by_kernels(normalize_domain, _domain_kernels)),
    ):
        # The stubs do not know the "arrow" UDF form.
        con.create_function(  # type: ignore[call-overload]
            name,
            udf,
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
