"""References to CRM records stored in other systems, recognised whatever format they were typed in.

An ERP order remembers the opportunity it came from in a text column, written by whoever made the
order: ``salesforce:0065g00000AbCdEAAV``, the bare id, ``SF-0065g00000AbCdE`` (the 15-character form),
a link to the record, ``HubSpot deal 1234567``. :func:`recognise` finds the one known record each
reference points to, or says why it cannot (unknown, or ambiguous between records).

Salesforce ids come in two forms: 15 characters, case-sensitive, and 18, whose last three characters
encode the case of the first fifteen so that the id survives case-insensitive tools (spreadsheets
lower-case it). Both forms, in any case for the 18-character one, resolve to the same record.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["KnownRecord", "Recognised", "recognise", "salesforce_id15"]

# What people put before an id to say which system it is from.
_SYSTEM_WORDS = {
    "salesforce": "salesforce",
    "sfdc": "salesforce",
    "sf": "salesforce",
    "hubspot": "hubspot",
    "hs": "hubspot",
    "dynamics": "dynamics",
    "d365": "dynamics",
    "msdyn": "dynamics",
    "zoho": "zoho",
    "pipedrive": "pipedrive",
    "pd": "pipedrive",
    "sugarcrm": "sugarcrm",
    "sugar": "sugarcrm",
    "creatio": "creatio",
    "infor": "infor_crm",
    "infor_crm": "infor_crm",
    "saleslogix": "infor_crm",
    "sage": "sage_crm",
    "sage_crm": "sage_crm",
    "sap": "sap_b1",
    "sap_b1": "sap_b1",
    "b1": "sap_b1",
}
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+){4}|[A-Za-z0-9_]+")  # a GUID, or a word
_SF_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id15(token: str) -> str | None:
    """The case-sensitive 15-character form of a Salesforce id given in either form, else None."""
    if len(token) == 15 and token.isalnum():
        return token
    if len(token) != 18 or not token.isalnum():
        return None
    head, suffix = token[:15], token[15:].upper()
    if any(c not in _SF_SUFFIX for c in suffix):
        return None
    chars = []
    for block, code in zip((head[0:5], head[5:10], head[10:15]), suffix, strict=True):
        bits = _SF_SUFFIX.index(code)
        chars += [c.upper() if bits >> i & 1 else c.lower() for i, c in enumerate(block)]
    rebuilt = "".join(chars)
    # Letters the suffix marks upper case must be letters: otherwise this is no Salesforce id.
    return rebuilt if rebuilt.lower() == head.lower() else None


@dataclass(frozen=True)
class KnownRecord:
    """A record a reference may point to: ``<source>:<source_id>``."""

    record_id: str
    source: str
    source_id: str


@dataclass(frozen=True)
class Recognised:
    """What a reference points to: a record, or why none."""

    reference: str
    record_id: str | None
    how: str  # exact, id, salesforce_id, guid, unknown, ambiguous, empty


def _index(records: Iterable[KnownRecord]) -> tuple[dict[str, str], dict[str, set[str]], dict[str, set[str]]]:
    exact: dict[str, str] = {}
    by_id: dict[str, set[str]] = defaultdict(set)  # lower-cased id -> record_ids
    by_sf15: dict[str, set[str]] = defaultdict(set)  # case-sensitive 15-char id -> record_ids
    for r in records:
        exact[r.record_id.lower()] = r.record_id
        by_id[r.source_id.lower()].add(r.record_id)
        if r.source == "salesforce" and (sf15 := salesforce_id15(r.source_id)):
            by_sf15[sf15].add(r.record_id)
    return exact, by_id, by_sf15


def recognise(references: Iterable[str | None], records: Iterable[KnownRecord]) -> list[Recognised]:
    """The record each reference points to, in input order.

    A reference matches a known ``record_id`` whole, or contains one id token of a known record: a
    Salesforce id in either form, any other system's id compared without case. A system named in the
    reference (``salesforce:``, ``SF-``, ``HubSpot deal``, a ``salesforce.com`` link) restricts the
    match to that system. A token that fits records of several systems is ambiguous and matches none.

    Args:
        references: The stored references (None and blanks are allowed).
        records: Every record a reference may point to.

    Returns:
        One :class:`Recognised` per reference.
    """
    known = list(records)
    exact, by_id, by_sf15 = _index(known)
    source_of = {r.record_id: r.source for r in known}
    out: list[Recognised] = []
    for reference in references:
        text = (reference or "").strip().strip("'\"<>[]()")
        if not text:
            out.append(Recognised(reference or "", None, "empty"))
            continue
        if text.lower() in exact:
            out.append(Recognised(reference or "", exact[text.lower()], "exact"))
            continue
        tokens = _TOKEN.findall(text)
        systems = {_SYSTEM_WORDS[w] for w in re.findall(r"[a-z0-9_]+", text.lower()) if w in _SYSTEM_WORDS}
        if "salesforce.com" in text.lower() or "force.com" in text.lower():
            systems.add("salesforce")
        found: dict[str, str] = {}
        for token in tokens:
            if len(token) < 3:
                continue
            candidates = set(by_id.get(token.lower(), set()))
            how = "guid" if "-" in token else "id"
            if (sf15 := salesforce_id15(token)) is not None and sf15 in by_sf15:
                # The exact record, whatever case a tool gave the 18-character form.
                candidates = (candidates - {c for c in candidates if source_of[c] == "salesforce"}) | by_sf15[
                    sf15
                ]
                how = "salesforce_id"
            elif len(token) == 15:
                # A 15-character Salesforce id is case-sensitive: a case-insensitive hit is someone else.
                candidates = {c for c in candidates if source_of[c] != "salesforce"}
            if systems:
                candidates = {c for c in candidates if source_of[c] in systems}
            for candidate in candidates:
                found.setdefault(candidate, how)
        if len(found) == 1:
            ((record_id, how),) = found.items()
            out.append(Recognised(reference or "", record_id, how))
        else:
            out.append(Recognised(reference or "", None, "ambiguous" if found else "unknown"))
    return out
