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
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Placeholders a request template may use; anything else is a typo we catch at load time.
TEMPLATE_PLACEHOLDERS: frozenset[str] = frozenset({"fields", "where", "page_size", "object"})
# Placeholders of the server-side window filter templates.
FILTER_PLACEHOLDERS: frozenset[str] = frozenset({"value", "conditions", "cursor"})

_SYSTEM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SystemSpecError(ValueError):
    """A system YAML is missing, unreadable or does not match the declared models."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check_template(template: str, allowed: frozenset[str]) -> str:
    try:
        unknown = _placeholders(template) - allowed
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"template {template!r} is not a valid format string: {exc}") from exc
    if unknown:
        raise ValueError(
            f"template {template!r} uses unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    return template


# --- auth ------------------------------------------------------------------------------------------


class OAuth2ClientCredentialsAuth(_Model):
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4), e.g. a Salesforce connected app."""

    kind: Literal["oauth2_client_credentials"]
    token_path: str = Field(description="Token endpoint, relative to the base URL.")
    use_instance_url: bool = Field(
        default=False,
        description="Use the token response's `instance_url` as the API base (Salesforce).",
    )
    default_ttl_seconds: int = Field(
        default=900,
        gt=0,
        description="Token lifetime assumed when the response has no `expires_in` (Salesforce sends none).",
    )
    refresh_margin_seconds: int = Field(default=60, ge=0, description="Refresh this long before expiry.")
    client_id_variable: str = Field(description="Environment variable holding the client id (for messages).")
    client_secret_variable: str = Field(description="Environment variable holding the secret (for messages).")


class BearerTokenAuth(_Model):
    """A static bearer token, e.g. a HubSpot private-app access token."""

    kind: Literal["bearer"]
    token_variable: str = Field(description="Environment variable holding the token (for messages).")


AuthSpec = Annotated[OAuth2ClientCredentialsAuth | BearerTokenAuth, Field(discriminator="kind")]


# --- paging ----------------------------------------------------------------------------------------


class NextLinkPaging(_Model):
    """The response names the next page's URL (Salesforce ``nextRecordsUrl`` until ``done``)."""

    kind: Literal["next_link"]
    next_path: str = Field(description="Dotted path of the next page's URL in the response body.")
    done_path: str | None = Field(default=None, description="Dotted path of a boolean 'no more pages'.")


class CursorPaging(_Model):
    """The response carries an opaque cursor sent back as a query parameter (HubSpot ``after``)."""

    kind: Literal["cursor"]
    cursor_path: str = Field(description="Dotted path of the next cursor in the response body.")
    cursor_param: str = Field(description="Query parameter that carries the cursor.")


class OffsetPaging(_Model):
    """``offset``/``limit`` query parameters; stops on a short page or at the reported total."""

    kind: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    start: int = 0
    total_path: str | None = None


class PageNumberPaging(_Model):
    """A page number query parameter; stops on a short page or at the reported page count."""

    kind: Literal["page_number"]
    page_param: str = "page"
    start: int = 1
    total_pages_path: str | None = None


PagingSpec = Annotated[
    NextLinkPaging | CursorPaging | OffsetPaging | PageNumberPaging, Field(discriminator="kind")
]


# --- limits ----------------------------------------------------------------------------------------


class PageSizeSpec(_Model):
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


class RateLimitSpec(_Model):
    """Client-side pacing and the headers the API uses to talk about its limits."""

    requests: int = Field(gt=0, description="Requests allowed per interval (token bucket capacity).")
    interval_seconds: float = Field(gt=0)
    retry_after_header: str = "Retry-After"
    remaining_header: str | None = Field(
        default=None, description="Header with the requests left in the current interval."
    )
    interval_ms_header: str | None = Field(
        default=None, description="Header with the server's window length in milliseconds."
    )
    usage_header: str | None = Field(default=None, description="Header reporting usage, logged only.")


class RetrySpec(_Model):
    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    retry_after_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest Retry-After we honour before giving up on that attempt."
    )
    timeout_seconds: float = Field(default=30.0, gt=0)


class CheckSpec(_Model):
    """Requests ``doctor`` tries in order; the first that answers 2xx proves access."""

    paths: list[str] = Field(min_length=1)


# --- objects ---------------------------------------------------------------------------------------


class RequestSpec(_Model):
    """The first request of an extract; ``params`` and ``headers`` values are templates."""

    method: Literal["GET"] = "GET"
    path: str
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("params", "headers")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            _check_template(template, TEMPLATE_PLACEHOLDERS)
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"request path must start with '/', got {value!r}")
        return _check_template(value, TEMPLATE_PLACEHOLDERS)


class FieldSpec(_Model):
    name: str = Field(min_length=1, description="Output column name.")
    path: str | None = Field(default=None, description="Dotted path in the record; default: the name.")

    @property
    def source_path(self) -> str:
        return self.path or self.name


class ServerFilterSpec(_Model):
    """How the cursor window is pushed into the request (e.g. a SOQL WHERE clause)."""

    lower: str = Field(description="Inclusive lower bound, e.g. 'SystemModstamp >= {value}'.")
    upper: str = Field(description="Exclusive upper bound, e.g. 'SystemModstamp < {value}'.")
    join: str = " AND "
    where: str = Field(default=" WHERE {conditions}", description="Wraps the joined conditions.")

    @field_validator("lower", "upper", "where")
    @classmethod
    def _templates(cls, value: str) -> str:
        return _check_template(value, FILTER_PLACEHOLDERS)


class IncrementalSpec(_Model):
    cursor: str = Field(description="Declared field (output name) holding the cursor.")
    format: Literal["soql_datetime", "iso8601", "epoch_ms"] = Field(
        description="Literal format of a cursor value in the request filter."
    )
    server_filter: ServerFilterSpec | None = Field(
        default=None,
        description="Absent when the endpoint cannot filter: the window is then applied client-side.",
    )
    server_order: bool = Field(
        default=False, description="The request template orders by cursor then primary key."
    )
    lookback_seconds: int = Field(
        default=0,
        ge=0,
        description=(
            "An incremental run reads from the committed watermark minus this: records committed late "
            "with an earlier cursor (long transactions, search index lag) are picked up the next time."
        ),
    )


class DeletesSpec(_Model):
    """How deleted records are read.

    * ``query_all``: one request path that also returns deleted rows (Salesforce ``queryAll``),
      flagged by ``flag_field``.
    * ``archived_pass``: a second pass with ``param=value`` returning only deleted rows (HubSpot
      ``archived=true``); ``cursor_path`` is the record path windowing that pass (``archivedAt``).
    """

    mode: Literal["none", "query_all", "archived_pass"] = "none"
    path: str | None = Field(default=None, description="query_all: request path including deleted rows.")
    flag_field: str | None = Field(default=None, description="Declared field that marks a deleted row.")
    param: str | None = None
    value: str | None = None
    cursor_path: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> DeletesSpec:
        if self.mode == "query_all" and not (self.path and self.flag_field):
            raise ValueError("deletes mode 'query_all' needs 'path' and 'flag_field'")
        if self.mode == "archived_pass" and not (self.param and self.value):
            raise ValueError("deletes mode 'archived_pass' needs 'param' and 'value'")
        return self


class BulkQuerySpec(_Model):
    """Salesforce Bulk API 2.0 query jobs for objects at or above ``threshold_records``.

    ``count_query`` (a SOQL ``COUNT()`` through the REST query resource) sizes the window first;
    below the threshold the REST query is cheaper (no job to create and poll).
    """

    jobs_path: str = Field(description="Query jobs resource, e.g. /services/data/v62.0/jobs/query.")
    query: str = Field(description="SOQL of the job; no ORDER BY (Bulk 2.0 refuses it).")
    count_query: str = Field(description="SOQL COUNT() with the same {where}.")
    threshold_records: int = Field(default=50_000, ge=0)
    max_records_per_page: int = Field(default=50_000, gt=0)
    poll_initial_seconds: float = Field(default=0.5, gt=0)
    poll_max_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("query", "count_query", "jobs_path")
    @classmethod
    def _templates(cls, value: str) -> str:
        return _check_template(value, TEMPLATE_PLACEHOLDERS)


class SearchSpec(_Model):
    """A search endpoint for incremental reads (HubSpot CRM search): filter and sort on the cursor.

    The search stops at ``max_results`` per query (HubSpot: 10,000, a 400 beyond), so a window whose
    ``total`` exceeds it is split in two halves by time until each half fits.
    """

    path: str = Field(description="POST path, e.g. /crm/v3/objects/contacts/search.")
    page_size: int = Field(default=200, gt=0)
    max_results: int = Field(default=10_000, gt=0)
    total_path: str = "total"
    after_path: str = "paging.next.after"


class DescribeSpec(_Model):
    """Where the source lists an object's fields, so a field added in the source is noticed even
    though only declared fields are requested (Salesforce describe, HubSpot properties)."""

    path: str = Field(
        description="GET path of the field list, e.g. /services/data/v62.0/sobjects/Account/describe."
    )
    names_path: str = Field(description="Dotted path of the list of field entries.")
    name_key: str = "name"


class UpsertSpec(_Model):
    """Batched upsert by external id for the write side.

    * ``sobject_collections``: Salesforce ``PATCH .../composite/sobjects/{SObject}/{ExternalIdField}``
      with ``allOrNone: false``; one result per record in request order.
    * ``hubspot_batch``: HubSpot ``POST /crm/v3/objects/{object}/batch/upsert`` with ``idProperty``;
      results matched back by the id property, per-record errors in ``errors[].context``.
    """

    style: Literal["sobject_collections", "hubspot_batch"]
    path: str = Field(description="Request path; {object} and {id_field} are filled in.")
    batch_size: int = Field(gt=0)
    retryable_errors: list[str] = Field(
        default_factory=list, description="Per-record error codes worth another attempt."
    )
    max_attempts: int = Field(default=3, ge=1)


class ObjectSpec(_Model):
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
    ignore_undeclared: list[str] = Field(
        default_factory=list,
        description="Response paths (or their prefixes) that are expected and not schema drift.",
    )
    bulk: BulkQuerySpec | None = Field(default=None, description="Bulk query jobs for big windows.")
    search: SearchSpec | None = Field(default=None, description="Search endpoint for incremental reads.")
    upsert: UpsertSpec | None = Field(default=None, description="How records are written back.")
    describe: DescribeSpec | None = Field(default=None, description="The source's field list, for drift.")
    fields: list[FieldSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ObjectSpec:
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate field names: {duplicates}")
        for reserved in ("_extracted_at", "_deleted"):
            if reserved in names:
                raise ValueError(f"'{reserved}' is added by the engine and cannot be declared")
        for role, name in (
            ("primary_key", self.primary_key),
            ("incremental.cursor", self.incremental.cursor),
            ("deletes.flag_field", self.deletes.flag_field),
        ):
            if name is not None and name not in names:
                raise ValueError(f"{role} {name!r} is not a declared field (declared: {names})")
        return self

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    def selected_names(self) -> list[str]:
        """API names to request: declared paths under ``select_prefix``, prefix removed, in order."""
        if self.select_prefix is None:
            return []
        selected: list[str] = []
        for f in self.fields:
            path = f.source_path
            if path.startswith(self.select_prefix):
                name = path[len(self.select_prefix) :]
                if name and name not in selected:
                    selected.append(name)
        return selected


class SystemSpec(_Model):
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
    objects: dict[str, ObjectSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SYSTEM_NAME.match(value):
            raise ValueError(f"system name must match {_SYSTEM_NAME.pattern}, got {value!r}")
        return value

    def get_object(self, name: str) -> ObjectSpec:
        """Return the declared object ``name`` or fail with the list of declared ones."""
        try:
            return self.objects[name]
        except KeyError:
            raise KeyError(
                f"{self.title} has no declared object {name!r}; declared: {sorted(self.objects)}"
            ) from None


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s) in the system declaration:"]
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  - {location}: {error['msg']}")
    return "\n".join(lines)


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
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
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
