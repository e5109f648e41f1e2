"""Declared systems: the pydantic models a system YAML must satisfy.

A system (Salesforce, HubSpot, ...) is data, not code: base URL variable, auth kind, paging kind,
page size, rate limits and, per object, the request template, where the records sit in a response,
the primary key, the incremental cursor, how deletes are read and the fields to extract. The one
engine in :mod:`crm_pipelines.connectors.engine` runs any system declared this way, in the spirit of
dlt's ``rest_api`` source.

Every model forbids unknown keys, so a typo in a YAML fails loudly at load time instead of being
silently ignored at run time.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from crm_pipelines.connectors.auth import (
    ApiKeyAuth,
    AuthSpec,
    BasicAuth,
    BearerTokenAuth,
    CredentialVariable,
    CsrfSpec,
    OAuth2ClientCredentialsAuth,
    OAuth2PasswordAuth,
    OAuth2RefreshTokenAuth,
    SessionAuth,
    credential_variables,
)
from crm_pipelines.connectors.cursor_formats import CURSOR_FORMATS
from crm_pipelines.connectors.limits import RateLimitSpec, RetrySpec
from crm_pipelines.connectors.paging import (
    CursorPaging,
    KeysetPaging,
    NextLinkPaging,
    OffsetPaging,
    PageNumberPaging,
    PagingSpec,
    SinglePaging,
)
from crm_pipelines.connectors.spec_base import SpecModel, ValueMatch, check_template, placeholders
from crm_pipelines.connectors.writes import (
    ConfirmSpec,
    HubSpotBatchUpsert,
    JsonBatchUpsert,
    LookupSpec,
    ODataBatchUpsert,
    PerRecordUpsert,
    RecordRequest,
    SObjectCollectionsUpsert,
    SubrequestItem,
    SubrequestsUpsert,
    UpsertSpec,
)

# The declaration models of each protocol live beside the code that runs it; they are importable
# from here too, with everything else a system declaration holds.
from crm_pipelines.lake import DELETED, EXTRACTED_AT
from crm_pipelines.yamlfile import problems, safe_load

__all__ = [
    "DESCRIBE_PLACEHOLDERS",
    "FILTER_PLACEHOLDERS",
    "TEMPLATE_PLACEHOLDERS",
    "ApiKeyAuth",
    "AuthSpec",
    "BasicAuth",
    "BearerTokenAuth",
    "BulkQuerySpec",
    "CheckSpec",
    "ChildRecordsSpec",
    "ConfirmSpec",
    "CredentialVariable",
    "CsrfSpec",
    "CursorPaging",
    "DeletesSpec",
    "DeltaSpec",
    "DescribeRename",
    "DescribeSpec",
    "ErrorBodySpec",
    "FieldSpec",
    "HubSpotBatchUpsert",
    "IncrementalSpec",
    "JsonBatchUpsert",
    "KeysetPaging",
    "LookupSpec",
    "NextLinkPaging",
    "OAuth2ClientCredentialsAuth",
    "OAuth2PasswordAuth",
    "OAuth2RefreshTokenAuth",
    "ODataBatchUpsert",
    "ObjectSpec",
    "OffsetPaging",
    "PageNumberPaging",
    "PageSizeSpec",
    "PagingSpec",
    "PerRecordUpsert",
    "RateLimitSpec",
    "RecordRequest",
    "RequestSpec",
    "RetrySpec",
    "SObjectCollectionsUpsert",
    "SearchSpec",
    "ServerFilterSpec",
    "SessionAuth",
    "SinglePaging",
    "SubrequestItem",
    "SubrequestsUpsert",
    "SystemSpec",
    "SystemSpecError",
    "UpsertSpec",
    "ValueMatch",
    "available_systems",
    "credential_variables",
    "load_system",
    "load_system_file",
    "parse_system",
    "systems_dir",
]

# Placeholders a request template may use; anything else is a typo we catch at load time.
TEMPLATE_PLACEHOLDERS: frozenset[str] = frozenset(
    {"fields", "where", "page_size", "object", "since", "until"}
)
# Placeholders of the server-side window filter templates.
FILTER_PLACEHOLDERS: frozenset[str] = frozenset({"value", "conditions", "cursor"})

_SYSTEM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SystemSpecError(ValueError):
    """A system YAML is missing, unreadable or does not match the declared models."""


# --- limits ----------------------------------------------------------------------------------------


class PageSizeSpec(SpecModel):
    default: int = Field(gt=0)
    minimum: int = Field(default=1, gt=0)
    maximum: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PageSizeSpec:
        if not self.minimum <= self.default <= self.maximum:
            raise ValueError(
                f"page size must satisfy minimum <= default <= maximum, got "
                f"{self.minimum} <= {self.default} <= {self.maximum}"
            )
        return self

    def clamp(self, requested: int | None) -> int:
        """Return ``requested`` (or the default) clamped into the API's accepted range."""
        size = self.default if requested is None else requested
        return max(self.minimum, min(self.maximum, size))


class CheckSpec(SpecModel):
    """Requests ``doctor`` tries in order; the first that answers 2xx proves access."""

    paths: list[str] = Field(min_length=1)


# --- objects ---------------------------------------------------------------------------------------


class RequestSpec(SpecModel):
    """The first request of an extract; ``params`` and ``headers`` values are templates."""

    method: Literal["GET"] = "GET"
    path: str
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("params", "headers")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_template(template, TEMPLATE_PLACEHOLDERS)
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"request path must start with '/', got {value!r}")
        return check_template(value, TEMPLATE_PLACEHOLDERS)


class FieldSpec(SpecModel):
    name: str = Field(min_length=1, description="Output column name.")
    path: str | None = Field(default=None, description="Dotted path in the record; default: the name.")
    select: bool | str = Field(
        default=True,
        description=(
            "How the field is listed in {fields}: true by its path; false not at all, for a value "
            "another request option brings in, e.g. a lookup's name from $expand (Country.Name: "
            "$select would refuse the path); a name, when the API is asked for it by another name "
            "than the path it is read from (Zoho: Account_Name.id is requested as Account_Name)."
        ),
    )
    read_only: bool | None = Field(
        default=None,
        description=(
            "Never written back (a system field, a formula, a lookup's display value). Default: true "
            "for a field not listed in {fields} (select: false, e.g. a lookup's name from $expand)."
        ),
    )
    write_only: bool = Field(
        default=False,
        description=(
            "Taken on writes but never returned by reads (Zendesk's requester and comment on a "
            "ticket): its column stays null and an extract does not report it as schema drift."
        ),
    )
    write_as: Literal["string", "integer", "number", "boolean"] | None = Field(
        default=None,
        description=(
            "The JSON type the API takes when the field is written, when it is not the text the "
            'mapping produces (a Dataverse choice is an integer: industrycode 12, not "12").'
        ),
    )
    write_key: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The key a write sends the value under, as it is (never split as a dotted path), when the "
            "API takes the field by another name than it is read by: a Dataverse lookup is read as "
            "_parentcustomerid_value and set as parentcustomerid_account@odata.bind."
        ),
    )
    write_template: str | None = Field(
        default=None,
        description=(
            "How a written value is spelled, {value} standing for it: a Dataverse lookup binds "
            "/accounts({value})."
        ),
    )
    label: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The field's display name in the source: its key is found at run time in the object's "
            "field list (describe.label_key) and replaces {key} in path and select (Pipedrive custom "
            "fields: path custom_fields.{key})."
        ),
    )

    @model_validator(mode="after")
    def _write_template(self) -> FieldSpec:
        if self.write_template is not None:
            check_template(self.write_template, frozenset({"value"}))
            if "{value}" not in self.write_template:
                raise ValueError(f"field {self.name!r}: write_template needs {{value}}")
        return self

    @model_validator(mode="after")
    def _key_placeholder(self) -> FieldSpec:
        templated = [t for t in (self.path, self.select) if isinstance(t, str) and "{key}" in t]
        if self.label is not None and not templated:
            raise ValueError(
                f"field {self.name!r}: a label needs {{key}} in its path, e.g. custom_fields.{{key}}"
            )
        if self.label is None and templated:
            raise ValueError(f"field {self.name!r}: {{key}} in a path needs a label to find the key by")
        return self

    @property
    def source_path(self) -> str:
        return self.path or self.name

    @property
    def writable(self) -> bool:
        """Whether a sync may write this field."""
        return not self.read_only if self.read_only is not None else self.select is not False


class ServerFilterSpec(SpecModel):
    """How the cursor window is pushed into the request (e.g. a SOQL WHERE clause)."""

    lower: str = Field(description="Inclusive lower bound, e.g. 'SystemModstamp >= {value}'.")
    upper: str | None = Field(
        default=None,
        description=(
            "Exclusive upper bound, e.g. 'SystemModstamp < {value}'. Absent when the filter language "
            "has no 'less than' (Sage CRM documents eq, ge, gt, like, between): the window's end is "
            "then applied on the client only."
        ),
    )
    join: str = " AND "
    where: str = Field(default=" WHERE {conditions}", description="Wraps the joined conditions.")

    @field_validator("lower", "upper", "where")
    @classmethod
    def _templates(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, FILTER_PLACEHOLDERS)


class DeltaSpec(SpecModel):
    """Change tracking: the first read asks for a delta link, later reads follow it (Dynamics 365).

    The final page of a tracked read carries the link (``link_path``); following it later returns
    the records changed since and the deletions, and a new link.
    """

    link_path: str = Field(description="Path of the delta link in the final page, e.g. '@odata.deltaLink'.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers of a tracked read, e.g. Prefer: odata.track-changes."
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Parameters of the first tracked read, replacing the object's (change tracking refuses $filter).",
    )
    expired_statuses: list[int] = Field(
        default_factory=lambda: [410], description="Statuses meaning the link expired: read everything again."
    )
    expired_codes: list[str] = Field(
        default_factory=list, description="Error codes meaning the link expired (with any 4xx status)."
    )

    @field_validator("headers", "params")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_template(template, TEMPLATE_PLACEHOLDERS)
        return value


class IncrementalSpec(SpecModel):
    cursor: str = Field(description="Declared field (output name) holding the cursor.")
    format: str = Field(
        description=f"Literal format of a cursor value in request filters: one of {', '.join(CURSOR_FORMATS.names())}."
    )
    time_field: str | None = Field(
        default=None,
        description="Declared field with the time of day of a date cursor (SAP Business One UpdateTime).",
    )
    server_filter: ServerFilterSpec | None = Field(
        default=None,
        description="Absent when the endpoint cannot filter: the window is then applied client-side.",
    )
    server_order: bool = Field(
        default=False, description="The request template orders by cursor then primary key."
    )
    lower_bound: Literal["inclusive", "exclusive"] = Field(
        default="inclusive",
        description=(
            "How the server reads the lower bound ({since}, server_filter.lower): 'exclusive' means "
            "'changed after' (Zoho's If-Modified-Since), so the engine sends one unit of the format's "
            "precision earlier and a record stamped exactly at the bound is still read."
        ),
    )
    lookback_seconds: int = Field(
        default=0,
        ge=0,
        description=(
            "An incremental run reads from the committed watermark minus this: records committed late "
            "with an earlier cursor (long transactions, search index lag) are picked up the next time."
        ),
    )
    delta: DeltaSpec | None = Field(default=None, description="Change tracking instead of a cursor window.")
    full_read_since: str | None = Field(
        default=None,
        description=(
            "The {since} a read without a lower bound (a full read) sends, for an endpoint that "
            "needs one: Zendesk's incremental exports require start_time, and 0 starts at the beginning."
        ),
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in CURSOR_FORMATS:
            raise ValueError(CURSOR_FORMATS.unknown(value))
        return value


class DeletesSpec(SpecModel):
    """How deleted records are read.

    * ``flagged``: the listing (or ``path``/``params``) also returns deleted rows, marked by
      ``flag_field`` (Salesforce ``queryAll`` + ``IsDeleted``).
    * ``deleted_pass``: a second pass returning only deleted records (HubSpot ``archived=true``, Zoho
      ``/{module}/deleted``); ``cursor_path`` windows it, ``id_path`` finds the key.
    * ``delta``: entries of a delta response that ``match`` are deletions (Dynamics ``$deletedEntity``).
    * ``key_compare``: a keys-only read of the whole object; keys gone since the last snapshot are
      deleted (systems with no deletion feed).
    """

    mode: Literal["none", "flagged", "deleted_pass", "delta", "key_compare"] = "none"
    path: str | None = Field(default=None, description="Request path of the pass (default: the object's).")
    params: dict[str, str] = Field(
        default_factory=dict, description="Parameters added to (or replacing) the object's."
    )
    headers: dict[str, str] = Field(default_factory=dict)
    flag_field: str | None = Field(
        default=None, description="flagged: declared field that marks a deleted row."
    )
    flag_values: list[str] = Field(default_factory=lambda: ["true", "1"])
    flag_when: Literal["value", "set"] = Field(
        default="value",
        description=(
            "flagged: 'value' when flag_field holds one of flag_values; 'set' when it holds any value "
            "at all (a deletion time such as Zendesk's deleted_at)."
        ),
    )
    records_path: str | None = Field(default=None, description="deleted_pass: where the records sit.")
    id_path: str | None = Field(
        default=None, description="Path of a deleted entry's key (default: the key's)."
    )
    cursor_path: str | None = Field(default=None, description="Record path windowing a deleted pass.")
    match: ValueMatch | None = Field(default=None, description="delta: what marks an entry as a deletion.")
    filter: str | None = Field(
        default=None,
        description=(
            "deleted_pass: a server condition added to the window's (incremental.server_filter), e.g. "
            "'comp_deleted eq 1'; the pass's {where} is both, joined, or this alone on a full read."
        ),
    )
    paging: PagingSpec | None = None
    max_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description=(
            "A read that would delete more than this share of the live records stops until an operator "
            "confirms (crm-pipelines confirm-deletes): missing keys look like deletions whatever lost them."
        ),
    )
    min_rows: int = Field(
        default=10, ge=0, description="Deleting this many records or fewer never needs a confirmation."
    )

    @field_validator("params", "headers")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_template(template, TEMPLATE_PLACEHOLDERS)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"deletes path must start with '/', got {value!r}")
        return None if value is None else check_template(value, TEMPLATE_PLACEHOLDERS)

    @model_validator(mode="after")
    def _complete(self) -> DeletesSpec:
        if self.mode == "flagged" and not self.flag_field:
            raise ValueError("deletes mode 'flagged' needs 'flag_field'")
        if self.mode == "delta" and self.match is None:
            raise ValueError("deletes mode 'delta' needs 'match'")
        return self


class BulkQuerySpec(SpecModel):
    """Salesforce Bulk API 2.0 query jobs for objects at or above ``threshold_records``.

    ``count_query`` (a SOQL ``COUNT()`` through the REST query resource) sizes the window first;
    below the threshold the REST query is cheaper (no job to create and poll).
    """

    jobs_path: str = Field(description="Query jobs resource, e.g. /services/data/v62.0/jobs/query.")
    query: str = Field(description="SOQL of the job; no ORDER BY (Bulk 2.0 refuses it).")
    count_query: str = Field(description="SOQL COUNT() with the same {where}.")
    threshold_records: int = Field(default=50_000, ge=0)
    max_records_per_page: int = Field(default=50_000, gt=0)
    parallel_results: int = Field(
        default=0,
        ge=0,
        le=5,
        description=(
            "Result pages fetched at once through 'Get Parallel Results' (jobs/query/{id}/resultPages, "
            "API 58.0+); 0 follows the Sforce-Locator header one page after another."
        ),
    )
    poll_initial_seconds: float = Field(default=0.5, gt=0)
    poll_max_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("query", "count_query", "jobs_path")
    @classmethod
    def _templates(cls, value: str) -> str:
        return check_template(value, TEMPLATE_PLACEHOLDERS)


class SearchSpec(SpecModel):
    """A search endpoint for incremental reads (HubSpot CRM search): filter and sort on the cursor.

    The search stops at ``max_results`` per query (HubSpot: 10,000, a 400 beyond), so a window whose
    ``total`` exceeds it is split in two halves by time until each half fits.
    """

    path: str = Field(description="POST path, e.g. /crm/v3/objects/contacts/search.")
    page_size: int = Field(default=200, gt=0)
    max_results: int = Field(default=10_000, gt=0)
    total_path: str = "total"
    after_path: str = "paging.next.after"


# Placeholders of a describe request and of its names_path: the object's name, the page size.
DESCRIBE_PLACEHOLDERS: frozenset[str] = frozenset({"object", "page_size"})


class DescribeRename(SpecModel):
    """A field-list entry the records carry under another name (Dataverse lists the lookup
    ``parentcustomerid``; records carry ``_parentcustomerid_value``)."""

    match: ValueMatch = Field(description="Test on the entry (json: its keys; xsd: '@' + attribute).")
    to: str = Field(description="The name records carry, a template with {name}, e.g. '_{name}_value'.")

    @field_validator("to")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value, frozenset({"name"}))


class DescribeSpec(SpecModel):
    """Where the source lists an object's fields, so a field added in the source is noticed even
    though only declared fields are requested (Salesforce describe, HubSpot properties, SugarCRM
    metadata, SAP Business One and other OData ``$metadata``)."""

    path: str = Field(
        description="GET path of the field list, e.g. /services/data/v62.0/sobjects/Account/describe."
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters of the request, e.g. SugarCRM {module_filter: '{object}'}.",
    )
    format: Literal["json", "xsd"] = Field(
        default="json",
        description="json: a JSON document; xsd: an XML schema (SData $schema, OData $metadata EDMX).",
    )
    names_path: str = Field(
        description=(
            "json: dotted path of the field entries; xsd: the element path from the root, prefixed "
            "elements resolved through `namespaces` ('xs:' is the XML Schema namespace), predicates "
            "as ElementTree reads them, e.g. \"edm:EntityType[@Name='BusinessPartner']/edm:Property\"."
        )
    )
    names_from: Literal["entries", "keys"] = Field(
        default="entries",
        description=(
            "json only. entries: a list of field entries, each named by name_key; keys: an object "
            "keyed by field name (SugarCRM's modules.<module>.fields), entries that are not objects skipped."
        ),
    )
    name_key: str = Field(
        default="name", description="Key (json) or attribute '@name' (xsd) of a field's name."
    )
    namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="xsd only: prefix -> namespace URI of the prefixes names_path uses (EDMX: edmx, edm).",
    )
    renames: list[DescribeRename] = Field(
        default_factory=list,
        description="Entries the records carry under another name; the first matching rename applies.",
    )
    paging: PagingSpec | None = Field(
        default=None,
        description="How a JSON list of entries is paged (Pipedrive v2 field lists); absent: one request.",
    )
    label_key: str | None = Field(
        default=None,
        description=(
            "json: key of a field's display name; fields declared with `label` find their key "
            "(name_key) by it at run time (Pipedrive custom fields are keyed by per-company hashes)."
        ),
    )
    label_where: ValueMatch | None = Field(
        default=None,
        description=(
            "Only entries matching this are found by label (Pipedrive: {path: is_custom_field, "
            "equals: true}, so a standard field with the same display name does not compete)."
        ),
    )
    containers: list[str] = Field(
        default_factory=list,
        description=(
            "Record paths under which listed fields sit (Pipedrive v2 puts custom fields under "
            "custom_fields): a listed name N is declared by a field whose path is <container>.N."
        ),
    )

    @field_validator("path", "names_path")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value, DESCRIBE_PLACEHOLDERS)

    @field_validator("params")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_template(template, DESCRIBE_PLACEHOLDERS)
        return value

    @model_validator(mode="after")
    def _format_keys(self) -> DescribeSpec:
        if self.format == "xsd" and self.names_from != "entries":
            raise ValueError("names_from 'keys' reads a JSON object; an XML field list is always entries")
        if self.format == "json" and self.namespaces:
            raise ValueError("namespaces apply to format 'xsd' only")
        if self.paging is not None and (self.format != "json" or self.names_from != "entries"):
            raise ValueError("paging applies to a JSON list of entries (format json, names_from entries)")
        if self.label_key is not None and (self.format != "json" or self.names_from != "entries"):
            raise ValueError("label_key needs a JSON list of entries (format json, names_from entries)")
        return self


class ChildRecordsSpec(SpecModel):
    """The records sit in a list inside each listed item: every child is a record, its parent
    reachable under ``parent_key`` (Zendesk's ticket events export: each event's comments are in
    its ``child_events``)."""

    path: str = Field(description="Dotted path of the children list in each listed item.")
    where: ValueMatch | None = Field(
        default=None, description="Only children matching this are records (e.g. event_type Comment)."
    )
    parent_key: str = Field(
        default="parent", min_length=1, description="Key under which a child record carries its parent."
    )


class ErrorBodySpec(SpecModel):
    """Where a system's error bodies put the message and the code (tried before the built-in shapes)."""

    message_paths: list[str] = Field(default_factory=list)
    code_paths: list[str] = Field(default_factory=list)


class ObjectSpec(SpecModel):
    request: RequestSpec
    records_path: str = Field(description="Dotted path of the records list in a response body.")
    primary_key: str = Field(description="Declared field (output name) that identifies a record.")
    incremental: IncrementalSpec
    deletes: DeletesSpec = Field(default_factory=DeletesSpec)
    select_prefix: str | None = Field(
        default="",
        description=(
            "Fields whose path starts with this prefix are requested by their path minus the prefix "
            "({fields} placeholder); None requests nothing explicitly."
        ),
    )
    select_separator: str = Field(
        default=".",
        description="How a nested field path is written in {fields} (SData selects 'Address/City').",
    )
    protocol_prefix: str | None = Field(
        default=None,
        description=(
            "Path segments starting with this are protocol properties the API returns with every "
            "resource and reference unasked (SData '$': $key, $url). They are never listed in "
            "{fields}: '$key' is left out, a reference's 'Account.$key' is requested as 'Account'."
        ),
    )
    ignore_undeclared: list[str] = Field(
        default_factory=list,
        description="Response paths (or their prefixes) that are expected and not schema drift.",
    )
    bulk: BulkQuerySpec | None = Field(default=None, description="Bulk query jobs for big windows.")
    search: SearchSpec | None = Field(default=None, description="Search endpoint for incremental reads.")
    upsert: UpsertSpec | None = Field(
        default=None, description="How records are created or updated by an external id field."
    )
    update: UpsertSpec | None = Field(
        default=None,
        description=(
            "How existing records are updated by their own id (the primary key); the same styles as "
            "upsert. A record whose id the system does not know is rejected, never created."
        ),
    )
    describe: DescribeSpec | None = Field(default=None, description="The source's field list, for drift.")
    paging: PagingSpec | None = Field(default=None, description="Overrides the system's paging.")
    children: ChildRecordsSpec | None = Field(
        default=None, description="The records are children of the listed items (see ChildRecordsSpec)."
    )
    fields: list[FieldSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ObjectSpec:
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate field names: {duplicates}")
        for reserved in (EXTRACTED_AT, DELETED):
            if reserved in names:
                raise ValueError(f"'{reserved}' is added by the engine and cannot be declared")
        for role, name in (
            ("primary_key", self.primary_key),
            ("incremental.cursor", self.incremental.cursor),
            ("incremental.time_field", self.incremental.time_field),
            ("deletes.flag_field", self.deletes.flag_field),
        ):
            if name is not None and name not in names:
                raise ValueError(f"{role} {name!r} is not a declared field (declared: {names})")
        if (self.deletes.mode == "delta") != (self.incremental.delta is not None):
            raise ValueError("deletes mode 'delta' and incremental.delta go together")
        if self.bulk is not None and self.deletes.mode not in ("none", "flagged"):
            # A bulk job reads one query: deletes must come with it (queryAll) or not at all.
            raise ValueError("bulk reads need deletes mode 'none' or 'flagged' (the job's queryAll)")
        labelled = [f.name for f in self.fields if f.label is not None]
        if self.primary_key in labelled:
            raise ValueError("the primary key cannot be declared by label (keys-only reads need its path)")
        if labelled and (self.describe is None or self.describe.label_key is None):
            raise ValueError(
                f"fields {labelled} have a label: describe with label_key must say where to find them"
            )
        return self

    def labelled(self) -> bool:
        """Whether some field is declared by its display name and needs the field list to be read."""
        return any(f.label is not None for f in self.fields)

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    def select_name(self, path: str) -> str | None:
        """How a record path is requested in {fields}, or None when it is not requested at all."""
        if self.select_prefix is None or not path.startswith(self.select_prefix):
            return None
        parts = path[len(self.select_prefix) :].split(".")
        if self.protocol_prefix:
            protocol = [i for i, part in enumerate(parts) if part.startswith(self.protocol_prefix)]
            if protocol:
                parts = parts[: protocol[0]]
        return self.select_separator.join(parts) or None

    def requested_name(self, field: FieldSpec) -> str | None:
        """How a field is requested in {fields}: its ``select`` name, else its path (``select_name``);
        None when the object requests nothing by name or the field is not requested."""
        if self.select_prefix is None or field.select is False:
            return None
        if isinstance(field.select, str):
            return field.select
        return self.select_name(field.source_path)

    def selected_names(self) -> list[str]:
        """API names to request: each field's ``select`` name, else its path as ``select_name``
        writes it, fields with ``select: false`` left out (they arrive through another option); in
        order, without repeats."""
        selected: list[str] = []
        for f in self.fields:
            name = self.requested_name(f)
            if name and name not in selected:
                selected.append(name)
        return selected


class SystemSpec(SpecModel):
    name: str
    title: str
    base_url_variable: str = Field(description="Environment variable holding the base URL (for messages).")
    auth: AuthSpec
    paging: PagingSpec
    page_size: PageSizeSpec
    rate_limit: RateLimitSpec
    retries: RetrySpec = Field(default_factory=RetrySpec)
    check: CheckSpec
    docs_url: str | None = None
    empty_statuses: list[int] = Field(
        default_factory=list, description="Statuses meaning 'an empty page' (Zoho: 304 Not Modified)."
    )
    error_body: ErrorBodySpec = Field(default_factory=ErrorBodySpec)
    objects: dict[str, ObjectSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SYSTEM_NAME.match(value):
            raise ValueError(f"system name must match {_SYSTEM_NAME.pattern}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _chains_can_restart(self) -> SystemSpec:
        for name, obj in self.objects.items():
            paging = obj.paging or self.paging
            if not isinstance(paging, CursorPaging) or paging.chain_limit is None:
                continue
            if not obj.incremental.server_order:
                raise ValueError(
                    f"objects.{name}: paging.chain_limit restarts the read from the highest cursor "
                    "read, which needs incremental.server_order: true (a request sorted by the cursor)"
                )
            templates = [obj.request.path, *obj.request.params.values(), *obj.request.headers.values()]
            used = set().union(*(placeholders(t) for t in templates))
            if "since" not in used and not ("where" in used and obj.incremental.server_filter):
                raise ValueError(
                    f"objects.{name}: paging.chain_limit needs the window's lower bound in the request "
                    "({since}, or {where} with incremental.server_filter) to restart a chain from it"
                )
        return self

    def paging_of(self, name: str) -> PagingSpec:
        """The paging of an object: its own declaration, else the system's."""
        return self.get_object(name).paging or self.paging

    def credential_variables(self) -> list[CredentialVariable]:
        """The environment variables of the system's credentials (see :func:`credential_variables`)."""
        return credential_variables(self.auth)

    def connection_fields(self, env: Mapping[str, str]) -> dict[str, Any]:
        """The connection settings the declared variables hold in ``env``: ``base_url`` and each
        credential that is set (keyword arguments of ``ConnectionSettings`` and ``CrmApiResource``)."""
        fields: dict[str, Any] = {"base_url": env[self.base_url_variable]}
        fields.update({c.field: env[c.variable] for c in self.credential_variables() if env.get(c.variable)})
        return fields

    def get_object(self, name: str) -> ObjectSpec:
        """Return the declared object ``name`` or fail with the list of declared ones."""
        try:
            return self.objects[name]
        except KeyError:
            raise KeyError(
                f"{self.title} has no declared object {name!r}; declared: {sorted(self.objects)}"
            ) from None


def _format_validation_error(source: str, exc: ValidationError) -> str:
    found = problems(exc)
    return "\n".join(
        [f"{source}: {len(found)} problem(s) in the system declaration:", *(f"  - {line}" for line in found)]
    )


def parse_system(*, data: Any, source: str = "<system>") -> SystemSpec:
    """Validate an already-parsed YAML document as a :class:`SystemSpec`.

    Args:
        data: The YAML document (a mapping).
        source: Name used in error messages (usually the file name).

    Returns:
        The validated system.

    Raises:
        SystemSpecError: With one line per problem and its location, chained to pydantic's error.
    """
    try:
        return SystemSpec.model_validate(data)
    except ValidationError as exc:
        raise SystemSpecError(_format_validation_error(source, exc)) from exc


def load_system_file(*, path: Path) -> SystemSpec:
    """Read and validate one system YAML file.

    Args:
        path: Path of the YAML file.

    Returns:
        The validated system.
    """
    try:
        data = safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SystemSpecError(f"{path}: cannot read the system declaration: {exc}") from exc
    return parse_system(data=data, source=str(path))


def systems_dir() -> Path:
    """Folder of the bundled system YAMLs (``crm_pipelines/connectors/systems``)."""
    return Path(str(importlib.resources.files("crm_pipelines.connectors") / "systems"))


def available_systems() -> list[str]:
    """Names of the bundled systems."""
    return sorted(p.stem for p in systems_dir().glob("*.yaml"))


def load_system(*, name: str) -> SystemSpec:
    """Load a bundled system by name, e.g. ``load_system(name="salesforce")`` (cached; specs are frozen).

    Args:
        name: System name, the YAML file's stem.

    Returns:
        The validated system.
    """
    return _load_bundled(name)


@functools.lru_cache(maxsize=32)
def _load_bundled(name: str) -> SystemSpec:
    if not _SYSTEM_NAME.match(name):
        # Refuse anything that could walk out of the systems folder.
        raise SystemSpecError(f"system name must match {_SYSTEM_NAME.pattern}, got {name!r}")
    path = systems_dir() / f"{name}.yaml"
    if not path.is_file():
        raise SystemSpecError(f"unknown system {name!r}; available: {available_systems()}")
    return load_system_file(path=path)
