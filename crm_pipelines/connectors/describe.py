"""The source's field list (``describe``): what fields an object has, and fields declared by label.

An object with ``describe`` has its field list read before the records: JSON (a list of entries,
the keys of an object, over pages when declared) or XML (an XSD, an OData EDMX, found by a
namespaced element path). Declared ``renames`` turn a listed name into the one records carry. Fields
declared by ``label`` (Pipedrive's per-company custom field hashes) get their paths from the entry
with that display name; the listed fields neither declared nor ignored are noted as
:class:`~.drift.SchemaDrift`. :func:`resolved_object` gives a writer the same resolved declaration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.collect import render_templates
from crm_pipelines.connectors.drift import SchemaDrift
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    AuthenticationError,
    ConnectorError,
    ErrorContext,
    check_url_allowed,
)
from crm_pipelines.connectors.pages import walk_pages
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.session import Session, context_for, http_client
from crm_pipelines.connectors.spec import DescribeSpec, ObjectSpec, SystemSpec
from crm_pipelines.connectors.spec_base import value_matches

__all__ = [
    "FieldList",
    "describe_object",
    "described_names",
    "field_names",
    "resolve_labels",
    "resolved_object",
]

log = logging.getLogger(__name__)


def resolved_object(*, system: SystemSpec, object_name: str, connection: ConnectionSettings) -> ObjectSpec:
    """The object with every field declared by ``label`` given its path in this account.

    Pipedrive keys custom fields by a hash that differs per company; a writer needs the key of, say,
    the external id field (``custom_fields.<hash>``) to address it. Objects without labels come back
    as declared, without a request.

    Args:
        system: The system declaration.
        object_name: A declared object.
        connection: Base URL and credentials.

    Returns:
        The object declaration with concrete paths.
    """
    obj = system.get_object(object_name)
    if not obj.labelled():
        return obj
    context = context_for(system, connection, object_name)
    check_url_allowed(url=connection.base_url, context=context)
    with http_client(connection=connection, retry=system.retries) as client:
        session = Session(
            system=system, connection=connection, context=context, client=client, retry=system.retries
        )
        return describe_object(
            session,
            obj,
            object_name,
            system.page_size.default,
            context,
            SchemaDrift(system.name, object_name),
        )


@dataclass(frozen=True)
class FieldList:
    """An object's field list as the source describes it."""

    names: set[str]  # what records call the fields (describe.name_key, or the keys)
    entries: list[Any]  # the JSON entries of a list (empty for keys and for XML)


def describe_object(
    session: Session,
    obj: ObjectSpec,
    object_name: str,
    size: int,
    context: ErrorContext,
    drift: SchemaDrift,
) -> ObjectSpec:
    """Read the source's field list: fields declared by ``label`` get their paths from it, and the
    fields neither declared nor ignored are noted as drift.

    Returns:
        The object with every ``label`` resolved. A failed read is logged and drift judged from
        records only, unless a label needs the list: then it fails, naming the field list.
    """
    listing = _read_field_list(session, obj, object_name, size, context, required=obj.labelled())
    if listing is None:
        return obj
    obj = resolve_labels(obj, listing, context)
    drift.source_fields = listing.names
    drift.not_selected = listing.names - described_names(obj)
    return obj


def _read_field_list(
    session: Session, obj: ObjectSpec, object_name: str, size: int, context: ErrorContext, *, required: bool
) -> FieldList | None:
    describe = obj.describe
    assert describe is not None
    values = {"object": object_name, "page_size": size}
    request = PageRequest(
        url=describe.path.format(**values), params=render_templates(describe.params, values)
    )
    names_path = describe.names_path.format(**values)
    body: Any = None
    entries: list[Any] = []
    try:
        if describe.format == "xsd":
            body = session.send("GET", request, context=context, accept="application/xml").content
        elif describe.paging is not None:
            # A JSON list over pages (validated): the entries of every page, in order.
            for _, _, page in walk_pages(
                session, describe.paging, request, size, names_path, object_name, context
            ):
                entries.extend(page)
        else:
            body = session.get_json(request, context=context)
            found = resolve_path(body, names_path)
            entries = found if isinstance(found, list) and describe.names_from == "entries" else []
    except AuthenticationError:
        raise
    except ConnectorError as exc:
        if required:
            raise
        log.warning(
            "%s: could not read the field list (%s); drift is judged from records only", context.where, exc
        )
        return None
    if describe.paging is not None:
        paged = {
            _record_name(e.get(describe.name_key), e, describe)
            for e in entries
            if isinstance(e, dict) and e.get(describe.name_key) not in (None, "")
        }
        return FieldList(paged, entries)
    names: set[str] | None
    try:
        names = field_names(body, describe, object_name)
    except (SyntaxError, ValueError, KeyError, TypeError) as exc:  # a path the answer does not fit
        names = None
        log.warning("%s: could not read the field list (%s)", context.where, exc)
    if names is None:
        if required:
            raise ApiRequestError(
                f"{context.where}: the field list {describe.path} did not parse; fields declared by label "
                "cannot be found in it.",
                fix=f"check describe.names_path of {object_name} in {context.yaml_path}.",
            )
        log.warning("%s: the field list did not parse; drift is judged from records only", context.where)
        return None
    return FieldList(names, entries)


def resolve_labels(obj: ObjectSpec, listing: FieldList, context: ErrorContext) -> ObjectSpec:
    """Fill ``{key}`` of each field declared by ``label`` with the key the field list gives that name."""
    describe = obj.describe
    if not obj.labelled() or describe is None or describe.label_key is None:
        return obj
    keys_by_label: dict[str, list[str]] = {}
    for entry in listing.entries:
        if not isinstance(entry, dict):
            continue
        if describe.label_where is not None and not value_matches(entry, describe.label_where):
            continue
        label, key = entry.get(describe.label_key), entry.get(describe.name_key)
        if label is not None and key not in (None, ""):
            keys_by_label.setdefault(str(label).strip(), []).append(_record_name(key, entry, describe))
    fields = []
    for f in obj.fields:
        if f.label is None:
            fields.append(f)
            continue
        keys = keys_by_label.get(f.label.strip())
        if keys is None:
            # Display names are typed by people: "External id" is meant as "External ID".
            folded = [
                k for label, ks in keys_by_label.items() if label.casefold() == f.label.casefold() for k in ks
            ]
            keys = folded or None
        if not keys:
            raise ApiRequestError(
                f"{context.where}: the field list {describe.path} has no field named {f.label!r} "
                f"(declared as {f.name}).",
                fix=(
                    f"create a field named {f.label!r} in {context.system_title}, or change the label of "
                    f"{f.name} in {context.yaml_path} to the name the field has there."
                ),
            )
        if len(keys) > 1:
            raise ApiRequestError(
                f"{context.where}: {len(keys)} fields are named {f.label!r} in {describe.path} "
                f"({', '.join(keys)}); {f.name} cannot tell which one is meant.",
                fix=f"rename all but one of them in {context.system_title}.",
            )
        update: dict[str, Any] = {"label": None}
        for attribute in ("path", "select"):
            template = getattr(f, attribute)
            if isinstance(template, str):
                update[attribute] = template.replace("{key}", keys[0])
        fields.append(f.model_copy(update=update))
    return obj.model_copy(update={"fields": fields})


def described_names(obj: ObjectSpec) -> set[str]:
    """The field-list names the declaration covers: requested names, paths and the objects they sit
    in (``address.value`` reads part of ``address``), names under a container, ignored paths."""
    prefix = obj.select_prefix or ""
    containers = obj.describe.containers if obj.describe is not None else []
    known: set[str] = set()
    for f in obj.fields:
        name = obj.requested_name(f)
        if name:
            known.add(name)
        path = f.source_path[len(prefix) :] if f.source_path.startswith(prefix) else f.source_path
        parts = path.split(".")
        known.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
        for container in containers:
            if path.startswith(container + "."):
                known.add(path[len(container) + 1 :])
    known |= {i[len(prefix) :] if prefix and i.startswith(prefix) else i for i in obj.ignore_undeclared}
    return known


_XSD = "http://www.w3.org/2001/XMLSchema"


def _xml_steps(names_path: str) -> list[str]:
    """The steps of an element path: split on '/' and on '.' (the dotted form), never inside a
    predicate, whose quoted values may hold either (``[@Name='SAPB1.Country']``)."""
    steps: list[str] = []
    current = ""
    depth = 0
    for char in names_path:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char in "/." and depth == 0:
            if current:
                steps.append(current)
            current = ""
            continue
        current += char
    if current:
        steps.append(current)
    return steps


def field_names(body: Any, describe: DescribeSpec, object_name: str) -> set[str] | None:
    """Field names from a describe answer: entries of a JSON list, keys of a JSON object, or
    elements of an XML document (an XSD, an OData EDMX) found by a namespaced element path.

    Each name is paired with its entry (an XML element's attributes keyed ``@name``), so a declared
    rename can test it: a Dataverse lookup listed as ``parentcustomerid`` is read as
    ``_parentcustomerid_value``.
    """
    names_path = describe.names_path.format(object=object_name)
    found: list[tuple[Any, Any]]  # (name, entry)
    if describe.format == "xsd":
        try:
            root = DefusedET.fromstring(body)
        except (DefusedET.ParseError, ValueError, DefusedXmlException):
            return None
        steps = _xml_steps(names_path)
        root_tag = root.tag.rsplit("}", 1)[-1]
        # The path may name the root itself (SData schemas: 'xs:schema/xs:complexType/...').
        if steps and steps[0].split("[", 1)[0].split(":")[-1] == root_tag:
            steps = steps[1:]
        path = "/".join(steps) or "."
        attribute = describe.name_key.lstrip("@")
        namespaces = {"xs": _XSD, **describe.namespaces}
        found = [
            (e.get(attribute), {f"@{name}": value for name, value in e.attrib.items()})
            for e in root.findall(path, namespaces)
        ]
    else:
        entries = resolve_path(body, names_path)
        if describe.names_from == "keys":
            if not isinstance(entries, dict):
                return None
            # Field definitions are objects; a sibling such as Sugar's "_hash" string is not a field.
            found = [(k, v) for k, v in entries.items() if isinstance(v, dict)]
        elif isinstance(entries, list):
            found = [(e.get(describe.name_key), e) for e in entries if isinstance(e, dict)]
        else:
            return None
    return {_record_name(name, entry, describe) for name, entry in found if name not in (None, "")}


def _record_name(name: Any, entry: Any, describe: DescribeSpec) -> str:
    """A listed field's name as records carry it: the first matching rename applies."""
    rename = next((r for r in describe.renames if value_matches(entry, r.match)), None)
    return rename.to.format(name=name) if rename is not None else str(name)
