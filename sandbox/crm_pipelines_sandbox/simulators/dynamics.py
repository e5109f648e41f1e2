"""Microsoft Dynamics 365 (Dataverse Web API v9.2) simulator over a record store.

What it serves, each the way Microsoft documents it:

* Auth: OAuth 2.0 client credentials against the Microsoft identity platform,
  ``POST /{tenant}/oauth2/v2.0/token`` (form: client_id, client_secret, grant_type, scope
  ``<org URL>/.default``), answering ``token_type``/``expires_in``/``ext_expires_in``/``access_token`` or
  AADSTS error bodies (``error``, ``error_description``, ``error_codes``, ``trace_id``,
  ``correlation_id``, ``timestamp``, ``error_uri``). Data calls send ``Authorization: Bearer``; a
  missing, unknown or expired token gets 401 with an empty body and a ``WWW-Authenticate: Bearer
  authorization_uri=..., resource_id=...`` challenge.
  https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
  https://learn.microsoft.com/entra/identity-platform/reference-error-codes
* Query: ``GET /api/data/v9.2/{entityset}`` with ``$select`` (every column when absent), ``$filter``,
  ``$orderby``, ``$top``, ``$count`` (``@odata.count`` capped at 5000), ``$expand`` of the currency
  lookup; server-driven paging with ``Prefer: odata.maxpagesize=N`` (default and maximum 5000; larger
  requests are ignored), ``Preference-Applied``, ``@odata.nextLink`` carrying a ``$skiptoken`` paging
  cookie; no ``$skip``. Records carry ``@odata.etag``; lookups appear as ``_<name>_value``.
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/page-results
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors
* Deletes: change tracking. ``Prefer: odata.track-changes`` (``$filter``, ``$orderby``, ``$expand``,
  ``$top`` refused with it) puts ``@odata.deltaLink`` on the last page; the delta link returns changed
  rows and ``{"@odata.context": ".../$metadata#<set>/$deletedEntity", "id", "reason": "deleted"}``
  entries, then a new delta link. Tokens older than the retention (7 days) answer 410.
  https://learn.microsoft.com/power-apps/developer/data-platform/use-change-tracking-synchronize-data-external-systems
* Metadata: ``GET /api/data/v9.2/EntityDefinitions(LogicalName='account')/Attributes`` lists the
  columns, custom columns added later included.
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-metadata-web-api
* Limits: service protection per user in a sliding window (6000 requests, 1200 s of execution time
  per 300 s, 52 concurrent requests): 429 with ``Retry-After`` and error codes 0x80072322 /
  0x80072321 / 0x80072326; ``x-ms-ratelimit-burst-remaining-xrm-requests`` and
  ``x-ms-ratelimit-time-remaining-xrm-requests`` on every answer.
  https://learn.microsoft.com/power-apps/developer/data-platform/api-limits
* Write: upsert by alternate key, ``PATCH /api/data/v9.2/accounts(accountnumber='A-1')`` (204 either
  way; 201 created / 200 updated with ``Prefer: return=representation``; ``If-Match: *`` prevents the
  create (404), ``If-None-Match: *`` the update (412)), and ``POST /api/data/v9.2/$batch``
  (multipart/mixed, up to 1000 operations, changesets atomic, ``Prefer: odata.continue-on-error``).
  Errors are ``{"error": {"code", "message"}}``.
  https://learn.microsoft.com/power-apps/developer/data-platform/use-upsert-insert-update-record
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api
  https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api

Alternate keys: ``accounts.accountnumber``, ``contacts.emailaddress1`` and the custom columns
``contacts.new_hubspotcontactid`` and ``opportunities.new_externalid`` (an org defines its own; these
are the ones this sandbox declares).
"""

from __future__ import annotations

import base64
import hmac
import random
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
)
from crm_pipelines_sandbox.simulators.dynamics_cases import (
    INCIDENT_RESOLUTIONS,
    INCIDENTS,
    incident_row,
    resolution_row,
)
from crm_pipelines_sandbox.simulators.dynamics_schema import (
    ACCOUNTS,
    API,
    ATTRIBUTE_TYPES,
    BY_LOGICAL,
    CHANGE_TRACKING_DAYS,
    CONTACTS,
    CURRENCIES,
    CURRENCY_IDS,
    DEFAULT_CONCURRENCY,
    DEFAULT_EXECUTION_SECONDS,
    DEFAULT_PROTECTION,
    DEFAULT_TOKEN_TTL,
    ENTITIES,
    INDUSTRY_CODES,
    INDUSTRY_FROM_SEED,
    LEAD_SOURCES,
    LEAD_STATUS_REASONS,
    LEADS,
    MAX_COUNT,
    MAX_PAGE_SIZE,
    NAMESPACE,
    OPPORTUNITIES,
    ORG_CREATED,
    STAGE_VALUES,
    STANDARD_COLUMNS,
    VERSION_COLUMN,
    Entity,
    decode_cookie,
    encode_cookie,
    ensure_indexes,
    error_json,
    key_condition,
    not_found_json,
    odata_error_json,
    ok_json,
    query_string,
    record_json,
    unknown_property,
    wants_annotations,
)
from crm_pipelines_sandbox.simulators.dynamics_write import DataverseWriter
from crm_pipelines_sandbox.simulators.odata import (
    Column,
    ODataError,
    after_condition,
    compile_filter,
    parse_orderby,
    parse_prefer,
    split_list,
)
from crm_pipelines_sandbox.simulators.records import (
    ObjectDef,
    Stamped,
    StoreInfo,
    fetch_records,
    open_store,
    store_info,
)
from crm_pipelines_sandbox.simulators.records import (
    quote as quote_name,
)
from crm_pipelines_sandbox.systems import STAGES, Kind, SandboxCrm, Started, UpdateCase, WriteCase


@dataclass
class _Protection:
    """Per-user execution time and concurrency (the request count is the base class's window)."""

    execution: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class DynamicsSimulator(DataverseWriter):
    """A Dataverse environment's Web API and its Microsoft identity platform token endpoint."""

    name = "dynamics"

    def __init__(
        self,
        store_path: Path,
        *,
        tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_ttl_seconds: float = DEFAULT_TOKEN_TTL,
        execution_seconds: float = DEFAULT_EXECUTION_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = DEFAULT_PROTECTION,
        faults: Faults | None = None,
    ) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.client_id = client_id or str(uuid.uuid4())
        self.client_secret = client_secret or f"Sbx8Q~{secrets.token_urlsafe(27)}"
        self.token_ttl_seconds = token_ttl_seconds
        self.execution_seconds = execution_seconds
        self.concurrency = concurrency
        self.change_tracking_days = CHANGE_TRACKING_DAYS
        # external id -> error codes to answer on its next upsert attempts (a retryable per-record failure)
        self.record_faults: dict[str, list[str]] = {}
        self._tokens: dict[str, float] = {}
        self._delta_floor = -1  # delta tokens at or below this change sequence have expired
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._protection = _Protection()
        self._request_state = threading.local()
        self.user_id = str(uuid.uuid5(NAMESPACE, f"user:{self.client_id}"))
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)
        ensure_indexes(self.store_path)

    # -- tokens ----------------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"

    def issue_token(self) -> str:
        header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"RS256"}').decode().rstrip("=")
        token = f"{header}.{secrets.token_urlsafe(96)}.{secrets.token_urlsafe(48)}"
        with self._state_lock:
            self._tokens[token] = time.monotonic() + self.token_ttl_seconds
        return token

    def expire_tokens(self) -> None:
        """Make every issued access token expire now (a run that outlives its token)."""
        with self._state_lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    def expire_delta_links(self) -> None:
        """Make every delta link issued so far expire (change tracking data older than the retention)."""
        with closing(open_store(self.store_path, readonly=True)) as conn:
            seq = int(conn.execute("SELECT value FROM _meta WHERE key = 'seq'").fetchone()[0])
        with self._state_lock:
            self._delta_floor = seq

    def _challenge(self, error: bool) -> Response:
        parts = [
            f"authorization_uri={self.base_url}/{self.tenant_id}/oauth2/authorize",
            f"resource_id={self.base_url}/",
        ]
        if error:
            parts = ["error=invalid_token", "error_description=Error during token validation!", *parts]
        return Response(401, b"", {"WWW-Authenticate": "Bearer " + ", ".join(parts), "OData-Version": "4.0"})

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        token = request.bearer_token()
        if token is None:
            return None, self._challenge(False)
        with self._state_lock:
            expires = self._tokens.get(token)
        if expires is None or expires <= time.monotonic():
            return None, self._challenge(True)
        return self.client_id, None

    # -- service protection ----------------------------------------------------------------------

    def count_usage(self, key: str) -> Response | None:
        window = (self.rate_limit or DEFAULT_PROTECTION).interval_seconds
        now = time.monotonic()
        with self._protection.lock:
            running = self._protection.in_flight.get(key, 0)
            if running >= self.concurrency:
                return self._limited(
                    "0x80072326",
                    f"Number of concurrent requests exceeded the limit of {self.concurrency}.",
                    1.0,
                )
            spent = self._protection.execution.setdefault(key, deque())
            while spent and spent[0][0] <= now - window:
                spent.popleft()
            used = sum(duration for _, duration in spent)
            if used >= self.execution_seconds:
                retry = spent[0][0] + window - now
                return self._limited(
                    "0x80072321",
                    f"Combined execution time of incoming requests exceeded limit of "
                    f"{int(self.execution_seconds * 1000):,} milliseconds over time window of {int(window)} "
                    "seconds. Decrease number of concurrent requests or reduce the duration of requests and "
                    "try again later.",
                    retry,
                )
            self._protection.in_flight[key] = running + 1
        self._request_state.started = (key, now)
        return None

    def _limited(self, code: str, message: str, retry_after: float) -> Response:
        return error_json(429, code, message, {"Retry-After": self.retry_after_header(retry_after)})

    def rate_limited(self, retry_after: float) -> Response:
        limit = self.rate_limit or DEFAULT_PROTECTION
        return self._limited(
            "0x80072322",
            f"Number of requests exceeded the limit of {limit.max_requests} over time window of "
            f"{int(limit.interval_seconds)} seconds.",
            retry_after,
        )

    def common_headers(self, request: Request, key: str | None) -> dict[str, str]:
        started = getattr(self._request_state, "started", None)
        self._request_state.started = None
        if key is None:
            return {}
        if started is not None:
            user, since = started
            with self._protection.lock:
                self._protection.in_flight[user] = max(0, self._protection.in_flight.get(user, 1) - 1)
                self._protection.execution.setdefault(user, deque()).append((since, time.monotonic() - since))
        window = self.limiter()
        remaining = window.remaining(key) if window is not None else 6000
        with self._protection.lock:
            used = sum(d for _, d in self._protection.execution.get(key, ()))
        left_ms = max(0.0, self.execution_seconds * 1000 - used * 1000)
        return {
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(remaining),
            "x-ms-ratelimit-time-remaining-xrm-requests": f"{left_ms:,.2f}",
        }

    def error_response(self, status: int) -> Response:
        if status == 401:
            return self._challenge(True)
        if status == 429:
            return self.rate_limited(1.0)
        messages = {
            400: ("0x80040203", "Invalid argument."),
            403: ("0x80040220", "The user does not hold the privilege needed for this operation."),
            404: ("0x80060888", "Resource not found for the segment."),
            503: ("0x80040216", "The service is temporarily unavailable. Please try again later."),
        }
        code, message = messages.get(status, ("0x80040216", "An unexpected error occurred."))
        return error_json(status, code, message)

    def not_found(self, request: Request) -> Response:
        segment = request.path.rstrip("/").rsplit("/", 1)[-1]
        return error_json(404, "0x80060888", f"Resource not found for the segment '{segment}'.")

    def method_not_allowed(self, request: Request) -> Response:
        return error_json(
            405, "0x80060888", f"The HTTP method '{request.method}' is not allowed on {request.path}."
        )

    # -- routes ----------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", self.token, auth=False)
        router.add("GET", API + r"/WhoAmI(?:\(\))?", self.who_am_i)
        router.add(
            "GET", API + r"/EntityDefinitions\(LogicalName='(?P<logical>\w+)'\)", self.entity_definition
        )
        router.add(
            "GET", API + r"/EntityDefinitions\(LogicalName='(?P<logical>\w+)'\)/Attributes", self.attributes
        )
        router.add("GET", API + r"/transactioncurrencies", self.currencies)
        router.add("POST", API + r"/\$batch", self.batch)
        router.add("GET", API + r"/(?P<entity_set>[a-z_]+)", self.list_records)
        router.add("POST", API + r"/(?P<entity_set>[a-z_]+)", self.create_record)
        router.add("GET", API + r"/(?P<entity_set>[a-z_]+)\((?P<keys>[^)]*)\)", self.read_record)
        router.add("PATCH", API + r"/(?P<entity_set>[a-z_]+)\((?P<keys>[^)]*)\)", self.upsert_record)

    def token(self, request: Request, tenant: str) -> Response:
        def aad(status: int, error: str, code: int, message: str) -> Response:
            trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            return Response.json(
                status,
                {
                    "error": error,
                    "error_description": f"AADSTS{code}: {message} Trace ID: {trace} Correlation ID: "
                    f"{correlation} Timestamp: {stamp}",
                    "error_codes": [code],
                    "timestamp": stamp,
                    "trace_id": trace,
                    "correlation_id": correlation,
                    "error_uri": f"https://login.microsoftonline.com/error?code={code}",
                },
            )

        if tenant != self.tenant_id:
            return aad(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                "signing into the correct cloud.",
            )
        form = request.form()
        for name in ("grant_type", "client_id", "scope"):
            if not form.get(name):
                return aad(
                    400,
                    "invalid_request",
                    900144,
                    f"The request body must contain the following parameter: '{name}'.",
                )
        if form["grant_type"] != "client_credentials":
            return aad(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form['grant_type']}'.",
            )
        if not hmac.compare_digest(form["client_id"], self.client_id):
            return aad(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form['client_id']}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant.",
            )
        secret = form.get("client_secret")
        if not secret:
            return aad(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
        if not hmac.compare_digest(secret, self.client_secret):
            return aad(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{self.client_id}'.",
            )
        scope = form["scope"].strip()
        if not scope.endswith("/.default"):
            return aad(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        resource = scope[: -len("/.default")].rstrip("/")
        if resource != self.base_url:
            return aad(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {self.tenant_id}. "
                "This can happen if the application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant. You might have sent your authentication "
                "request to the wrong tenant.",
            )
        ttl = int(self.token_ttl_seconds)
        return Response.json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": ttl,
                "ext_expires_in": ttl,
                "access_token": self.issue_token(),
            },
        )

    def who_am_i(self, request: Request) -> Response:
        return ok_json(
            {
                "@odata.context": f"{self.base_url}{API}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": str(uuid.uuid5(NAMESPACE, "businessunit")),
                "UserId": self.user_id,
                "OrganizationId": str(uuid.uuid5(NAMESPACE, f"org:{self.tenant_id}")),
            }
        )

    # -- metadata --------------------------------------------------------------------------------

    def _info(self) -> StoreInfo:
        return store_info(self.db())

    def entity_definition(self, request: Request, logical: str) -> Response:
        entity = BY_LOGICAL.get(logical)
        if entity is None:
            return error_json(404, "0x80040217", f"Could not find an entity with name {logical}.")
        obj = self._info().objects[entity.set_name]
        return ok_json(
            {
                "@odata.context": f"{self.base_url}{API}/$metadata#EntityDefinitions/$entity",
                "LogicalName": entity.logical,
                "EntitySetName": entity.set_name,
                "PrimaryIdAttribute": obj.key,
                "ChangeTrackingEnabled": True,
                "MetadataId": str(uuid.uuid5(NAMESPACE, f"entity:{entity.logical}")),
            }
        )

    def attributes(self, request: Request, logical: str) -> Response:
        entity = BY_LOGICAL.get(logical)
        if entity is None:
            return error_json(404, "0x80040217", f"Could not find an entity with name {logical}.")
        obj = self._info().objects[entity.set_name]
        known = (
            "LogicalName",
            "SchemaName",
            "AttributeType",
            "IsCustomAttribute",
            "MetadataId",
            "RequiredLevel",
        )
        wanted = split_list(request.param("$select")) or list(known)
        bad = [name for name in wanted if name not in known]
        if bad:
            return error_json(
                400,
                "0x80060888",
                f"Could not find a property named '{bad[0]}' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
            )
        values = []
        for field_def in obj.fields:
            lookup = entity.lookups.get(field_def.name)
            kind = (
                lookup.attribute_type
                if lookup is not None
                else "Uniqueidentifier"
                if field_def.name == obj.key
                else ATTRIBUTE_TYPES[field_def.type]
            )
            if field_def.name in entity.picklists:
                kind = "State" if field_def.name == "statecode" else "Picklist"
            if field_def.name == VERSION_COLUMN:
                kind = "BigInt"
            full = {
                "LogicalName": field_def.name,
                "SchemaName": "".join(p.capitalize() for p in field_def.name.split("_")),
                "AttributeType": kind,
                "IsCustomAttribute": field_def.name.startswith("new_")
                or field_def.name not in STANDARD_COLUMNS[obj.name],
                "MetadataId": str(uuid.uuid5(NAMESPACE, f"attribute:{logical}.{field_def.name}")),
                "RequiredLevel": {
                    "Value": "ApplicationRequired" if field_def.required else "None",
                    "CanBeChanged": True,
                    "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
                },
            }
            metadata_type = "Lookup" if lookup is not None else kind  # Customer is a LookupAttributeMetadata
            values.append(
                {
                    "@odata.type": f"#Microsoft.Dynamics.CRM.{metadata_type}AttributeMetadata",
                    **{k: full[k] for k in wanted},
                }
            )
        context = (
            f"{self.base_url}{API}/$metadata#EntityDefinitions('{logical}')/Attributes({','.join(wanted)})"
        )
        return ok_json({"@odata.context": context, "value": values})

    def currencies(self, request: Request) -> Response:
        columns = (
            "transactioncurrencyid",
            "isocurrencycode",
            "currencyname",
            "statecode",
            "createdon",
            "modifiedon",
            "versionnumber",
        )
        wanted = split_list(request.param("$select")) or list(columns)
        bad = [name for name in wanted if name not in columns]
        if bad:
            return error_json(
                400,
                "0x80060888",
                f"Could not find a property named '{bad[0]}' on type 'Microsoft.Dynamics.CRM.transactioncurrency'.",
            )
        rows = []
        for key, row in CURRENCIES.items():
            # Reference rows come with the org: created (and last changed) when it was set up.
            full = {
                "transactioncurrencyid": key,
                **row,
                "statecode": 0,
                "createdon": ORG_CREATED,
                "modifiedon": ORG_CREATED,
                "versionnumber": 1,
            }
            record = {"@odata.etag": 'W/"1"', **{name: full[name] for name in wanted}}
            record["transactioncurrencyid"] = key  # the key always comes back, as Dataverse does
            rows.append(record)
        return ok_json(
            {"@odata.context": f"{self.base_url}{API}/$metadata#transactioncurrencies", "value": rows}
        )

    # -- queries ---------------------------------------------------------------------------------

    def _entity(self, entity_set: str) -> tuple[Entity, ObjectDef]:
        entity = ENTITIES.get(entity_set)
        if entity is None:
            raise ODataError(
                f"Resource not found for the segment '{entity_set}'.", status=404, code="0x8006088a"
            )
        return entity, self._info().objects[entity_set]

    def _column(self, entity: Entity, obj: ObjectDef, name: str) -> Column | None:
        types = {f.name: f.type for f in obj.fields}
        if name == obj.modified_field:
            return Column("_modified", "datetime", canonical_time=True)
        if name == obj.created_field:
            return Column("_created", "datetime", canonical_time=True)
        if name == obj.key:
            return Column(quote_name(name), "guid")
        if name == VERSION_COLUMN:
            return Column("_seq", "integer")
        match = re.fullmatch(r"_(\w+)_value", name)
        if match and match.group(1) in entity.lookups:
            return Column(quote_name(match.group(1)), "guid")
        if name in types and name not in entity.lookups:
            return Column(quote_name(name), types[name])
        return None

    def _select(self, entity: Entity, obj: ObjectDef, request: Request) -> list[str]:
        """Store columns to return, in the order asked (all of them without ``$select``)."""
        names = split_list(request.param("$select"))
        if not names:
            return list(obj.field_names)
        out: list[str] = []
        for name in names:
            match = re.fullmatch(r"_(\w+)_value", name)
            column = match.group(1) if match and match.group(1) in entity.lookups else name
            if column not in obj.field_names or (column in entity.lookups and column == name):
                raise unknown_property(entity)(name)
            if column not in out:
                out.append(column)
        return out

    def _expand(self, entity: Entity, request: Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for part in re.split(r",(?![^()]*\))", request.param("$expand") or ""):
            part = part.strip()
            if not part:
                continue
            match = re.fullmatch(r"(\w+)(?:\(\$select=([\w,]+)\))?", part)
            if (
                match is None
                or match.group(1) != "transactioncurrencyid"
                or "transactioncurrencyid" not in entity.lookups
            ):
                name = match.group(1) if match else part
                raise unknown_property(entity)(name)
            wanted = split_list(match.group(2)) or ["isocurrencycode", "currencyname"]
            bad = [w for w in wanted if w not in ("isocurrencycode", "currencyname", "transactioncurrencyid")]
            if bad:
                raise ODataError(
                    f"Could not find a property named '{bad[0]}' on type 'Microsoft.Dynamics.CRM.transactioncurrency'."
                )
            out["transactioncurrencyid"] = wanted
        return out

    def list_records(self, request: Request, entity_set: str) -> Response:
        try:
            if request.param("$deltatoken") is not None:
                return self._delta(request, entity_set)
            return self._list(request, entity_set)
        except ODataError as exc:
            return odata_error_json(exc)

    def _page_size(self, prefer: Mapping[str, str], state: Mapping[str, Any] | None) -> tuple[int, list[str]]:
        applied: list[str] = []
        size = int(state["s"]) if state and "s" in state else MAX_PAGE_SIZE
        raw = prefer.get("odata.maxpagesize")
        if raw:
            try:
                asked = int(raw)
            except ValueError as exc:
                raise ODataError(f"Invalid value '{raw}' for the odata.maxpagesize preference.") from exc
            if 0 < asked <= MAX_PAGE_SIZE:  # larger requests are ignored, as documented
                size = asked
                applied.append(f"odata.maxpagesize={asked}")
        return size, applied

    def _list(self, request: Request, entity_set: str) -> Response:
        entity, obj = self._entity(entity_set)
        prefer = parse_prefer(request.header("Prefer"))
        tracking = "odata.track-changes" in prefer
        if request.param("$skip") is not None:
            raise ODataError("The query parameter $skip is not supported.", code="0x80060888")
        if tracking:
            for option in ("$filter", "$orderby", "$expand", "$top"):
                if request.param(option) is not None:
                    raise ODataError(
                        f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.',
                        code="0x80060888",
                    )
        columns = self._select(entity, obj, request)
        if obj.key not in columns:
            columns.append(obj.key)
        expand = self._expand(entity, request)
        hidden = {nav for nav in expand if nav not in columns}
        columns.extend(sorted(hidden))  # read for the expansion, not shown
        annotate = wants_annotations(prefer)
        state = (
            decode_cookie(unquote(request.param("$skiptoken") or "")) if request.param("$skiptoken") else None
        )
        size, applied = self._page_size(prefer, state)
        tracking = tracking or bool(state and state.get("k"))  # the paging cookie remembers it
        if tracking:
            applied.append("odata.track-changes")
        if annotate:
            applied.append(f'odata.include-annotations="{prefer["odata.include-annotations"]}"')
        conn = self.db()
        where = ["_deleted_at IS NULL"]
        params: list[object] = []
        if request.param("$filter") is not None:
            sql, filter_params = compile_filter(
                request.param("$filter") or "",
                lambda n: self._column(entity, obj, n),
                unknown_property(entity),
            )
            where.append(f"({sql})")
            params.extend(filter_params)
        order: list[tuple[str, bool]] = []
        for name, descending in parse_orderby(request.param("$orderby")):
            column = self._column(entity, obj, name)
            if column is None:
                raise unknown_property(entity)(name)
            order.append((column.sql, descending))
        key_sql = quote_name(obj.key)
        if not order or order[-1][0] != key_sql:
            order.append((key_sql, False))  # the primary key makes every order total, so pages never overlap
        top: int | None = None
        if request.param("$top") is not None and not tracking:
            try:
                top = int(request.param("$top") or "")
            except ValueError as exc:
                raise ODataError(
                    f"Invalid value for the $top query option: '{request.param('$top')}'."
                ) from exc
            if top < 0:
                raise ODataError("The $top query option must be a non-negative integer.")
        snapshot = (
            int(state["t"])
            if state and "t" in state
            else int(conn.execute("SELECT value FROM _meta WHERE key = 'seq'").fetchone()[0])
        )
        page_where = list(where)
        page_params = list(params)
        if state is not None:
            values = state.get("v")
            if not isinstance(values, list) or len(values) != len(order):
                raise ODataError("The $skiptoken does not match this query.")
            sql, after_params = after_condition(order, values)
            page_where.append(sql)
            page_params.extend(after_params)
        limit = min(top, MAX_PAGE_SIZE) if top is not None else size
        order_sql = ", ".join(f"{c} {'DESC' if d else 'ASC'}" for c, d in order)
        select_sql = ", ".join([*(c for c, _ in order), "_seq", *(quote_name(c) for c in columns)])
        rows = conn.execute(
            f"SELECT {select_sql} FROM {quote_name(obj.name)} WHERE {' AND '.join(page_where)}"
            f" ORDER BY {order_sql} LIMIT ?",
            [*page_params, limit + (0 if top is not None else 1)],
        ).fetchall()
        more = top is None and len(rows) > limit
        rows = rows[:limit]
        width = len(order)
        records = [
            record_json(
                entity,
                obj,
                columns,
                tuple(row[width + 1 :]),
                int(row[width]),
                expand=expand,
                annotate=annotate,
                hidden=hidden,
            )
            for row in rows
        ]
        body: dict[str, object] = {"@odata.context": self._context(entity_set, request)}
        if request.param("$count") == "true":
            count = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {quote_name(obj.name)} WHERE {' AND '.join(where)} LIMIT ?)",
                [*params, MAX_COUNT],
            ).fetchone()[0]
            body["@odata.count"] = count
        body["value"] = records
        if more:
            page = int(state.get("n", 1)) + 1 if state else 2
            cookie = encode_cookie(
                {"n": page, "v": list(rows[-1][:width]), "s": size, "t": snapshot, "k": int(tracking)}
            )
            kept = [(k, v) for k, vs in request.query.items() if k != "$skiptoken" for v in vs]
            body["@odata.nextLink"] = (
                f"{self.base_url}{request.path}?{query_string([*kept, ('$skiptoken', cookie)])}"
            )
        elif tracking:
            body["@odata.deltaLink"] = self._delta_link(entity_set, request, snapshot)
        headers = {"OData-Version": "4.0"}
        if applied:
            headers["Preference-Applied"] = ",".join(applied)
        return ok_json(body, headers)

    def _context(self, entity_set: str, request: Request, suffix: str = "") -> str:
        selected = split_list(request.param("$select"))
        shape = f"({','.join(selected)})" if selected else ""
        return f"{self.base_url}{API}/$metadata#{entity_set}{shape}{suffix}"

    def _delta_link(self, entity_set: str, request: Request, seq: int) -> str:
        stamp = datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S")
        params = [(k, v) for k, vs in request.query.items() if k == "$select" for v in vs]
        params.append(("$deltatoken", f"{seq}!{stamp}"))
        return f"{self.base_url}{API}/{entity_set}?{query_string(params)}"

    def _delta(self, request: Request, entity_set: str) -> Response:
        entity, obj = self._entity(entity_set)
        token = unquote(request.param("$deltatoken") or "")
        match = re.fullmatch(r"(\d+)!(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2})", token)
        if match is None:
            raise ODataError(f"The delta token '{token}' is not valid.", code="0x80044352")
        since = int(match.group(1))
        issued = datetime.strptime(match.group(2), "%m/%d/%Y %H:%M:%S").replace(tzinfo=UTC)
        with self._state_lock:
            floor = self._delta_floor
        if since <= floor or datetime.now(UTC) - issued > timedelta(days=self.change_tracking_days):
            raise ODataError(
                "Version stamp associated with the client has expired. Please perform a full sync.",
                status=410,
                code="0x80044352",
            )
        prefer = parse_prefer(request.header("Prefer"))
        state = (
            decode_cookie(unquote(request.param("$skiptoken") or "")) if request.param("$skiptoken") else None
        )
        size, applied = self._page_size(prefer, state)
        columns = self._select(entity, obj, request)
        if obj.key not in columns:
            columns.append(obj.key)
        conn = self.db()
        target = (
            int(state["t"])
            if state
            else int(conn.execute("SELECT value FROM _meta WHERE key = 'seq'").fetchone()[0])
        )
        after = int(state["v"][0]) if state else since
        select_sql = ", ".join(["_seq", "_deleted_at", *(quote_name(c) for c in columns)])
        rows = conn.execute(
            f"SELECT {select_sql} FROM {quote_name(obj.name)} WHERE _seq > ? AND _seq <= ? ORDER BY _seq LIMIT ?",
            (after, target, size + 1),
        ).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        values: list[dict[str, object]] = []
        for row in rows:
            if row[1] is not None:
                values.append(
                    {
                        "@odata.context": f"{self.base_url}{API}/$metadata#{entity_set}/$deletedEntity",
                        "id": row[2 + columns.index(obj.key)],
                        "reason": "deleted",
                    }
                )
            else:
                values.append(
                    record_json(entity, obj, columns, tuple(row[2:]), int(row[0]), expand={}, annotate=False)
                )
        body: dict[str, object] = {
            "@odata.context": self._context(entity_set, request, "/$delta"),
            "value": values,
        }
        if more:
            cookie = encode_cookie(
                {"n": int(state.get("n", 1)) + 1 if state else 2, "v": [rows[-1][0]], "s": size, "t": target}
            )
            kept = [(k, v) for k, vs in request.query.items() if k != "$skiptoken" for v in vs]
            body["@odata.nextLink"] = (
                f"{self.base_url}{request.path}?{query_string([*kept, ('$skiptoken', cookie)])}"
            )
        else:
            body["@odata.deltaLink"] = self._delta_link(entity_set, request, target)
        headers = {"OData-Version": "4.0"}
        if applied:
            headers["Preference-Applied"] = ",".join(applied)
        return ok_json(body, headers)

    # -- single records and writes --------------------------------------------------------------

    def read_record(self, request: Request, entity_set: str, keys: str) -> Response:
        try:
            entity, obj = self._entity(entity_set)
            condition, params, _ = key_condition(entity, obj, keys)
            columns = self._select(entity, obj, request)
            if obj.key not in columns:
                columns.append(obj.key)
            row = (
                self.db()
                .execute(
                    f"SELECT _seq, {', '.join(quote_name(c) for c in columns)} FROM {quote_name(obj.name)}"
                    f" WHERE {condition} AND _deleted_at IS NULL",
                    params,
                )
                .fetchone()
            )
        except ODataError as exc:
            return odata_error_json(exc)
        if row is None:
            return not_found_json(entity, keys)
        record = record_json(entity, obj, columns, tuple(row[1:]), int(row[0]), expand={}, annotate=False)
        body = {"@odata.context": self._context(entity_set, request, "/$entity"), **record}
        return ok_json(body, {"ETag": f'W/"{row[0]}"', "OData-Version": "4.0"})


# --- the sandbox contract -----------------------------------------------------------------------


# Canonical lead status -> the lead's status reason (None: one of the disqualified reasons, 4-7).
_LEAD_STATUS_CODES: dict[str, int | None] = {
    "new": 1,
    "working": 2,
    "nurturing": 2,
    "qualified": 3,
    "converted": 3,
    "unqualified": None,
}


class DynamicsSandbox(SandboxCrm):
    """Dynamics 365 Sales as the sandbox runs it: Dataverse accounts, contacts, opportunities and leads."""

    system = "dynamics"
    timestamp_format = "iso_z"
    objects = (ACCOUNTS, CONTACTS, OPPORTUNITIES, LEADS, INCIDENTS, INCIDENT_RESOLUTIONS)
    kinds = MappingProxyType(
        {
            "account": "accounts",
            "contact": "contacts",
            "deal": "opportunities",
            "lead": "leads",
            "case": "incidents",
        }
    )
    stage_values = STAGE_VALUES

    def new_key(self, kind: Kind, rng: random.Random) -> Any:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "account":
            industry = INDUSTRY_FROM_SEED.get(seed.industry or "")
            return {
                "accountid": key,
                "name": seed.name,
                "accountnumber": seed.ref,
                "websiteurl": seed.website,
                "telephone1": seed.phone,
                "address1_line1": seed.street,
                "address1_city": seed.city,
                "address1_postalcode": seed.postal_code,
                "address1_country": seed.country,
                "industrycode": INDUSTRY_CODES[industry] if industry else None,
                "revenue": float(seed.annual_revenue) if seed.annual_revenue else None,
                "statecode": 0,
            }
        if kind == "contact":
            full = " ".join(p for p in (seed.first_name, seed.last_name) if p) or None
            return {
                "contactid": key,
                "firstname": seed.first_name,
                "lastname": seed.last_name,
                "fullname": full,
                "emailaddress1": seed.email,
                "telephone1": seed.phone,
                "jobtitle": seed.title,
                "address1_line1": seed.street,
                "address1_city": seed.city,
                "address1_postalcode": seed.postal_code,
                "address1_country": seed.country,
                "birthdate": seed.birth_date.isoformat() if seed.birth_date else None,
                "parentcustomerid": refs.get(seed.account_ref) if seed.account_ref else None,
                "statecode": 0,
            }
        if kind == "lead":
            return self._lead_row(seed, key, refs)
        if kind == "case":
            return incident_row(seed, key, refs)
        if seed.stage not in STAGES:
            raise ValueError(f"unknown stage {seed.stage!r}")
        return {
            "opportunityid": key,
            "name": seed.name,
            "estimatedvalue": float(seed.amount) if seed.amount else None,
            # A currency is a lookup picked from the org's list; text no list holds cannot be stored.
            "transactioncurrencyid": CURRENCY_IDS.get((seed.currency or "").strip().upper()),
            "stepname": STAGE_VALUES[seed.stage],
            "statecode": {"closed_won": 1, "closed_lost": 2}.get(seed.stage, 0),
            "estimatedclosedate": seed.close_date,
            "parentaccountid": refs.get(seed.account_ref) if seed.account_ref else None,
        }

    @staticmethod
    def _lead_row(seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        """A lead: the canonical status as a status reason (and the state it belongs to); Dataverse
        has no funnel stage, so a seed's stage shows only through its status."""
        if seed.status not in _LEAD_STATUS_CODES:
            raise ValueError(f"unknown lead status {seed.status!r}")
        # Disqualified leads spread over the four reasons a user picks from.
        status = _LEAD_STATUS_CODES[seed.status] or 4 + sum(map(ord, seed.ref)) % 4
        sources = {label.lower(): code for code, label in LEAD_SOURCES.items()}
        return {
            "leadid": key,
            "firstname": seed.first_name,
            "lastname": seed.last_name,
            "fullname": " ".join(p for p in (seed.first_name, seed.last_name) if p) or None,
            "emailaddress1": seed.email,
            "telephone1": seed.phone,
            "companyname": seed.company,
            "jobtitle": seed.title,
            "address1_country": seed.country,
            "statecode": LEAD_STATUS_REASONS[status][1],
            "statuscode": status,
            "leadsourcecode": sources.get(seed.lead_source.lower(), 10) if seed.lead_source else None,
            # The contact a qualified lead became (a lead of a known person stays unlinked until then).
            "parentcontactid": refs.get(seed.contact_ref) if seed.contact_ref and seed.converted else None,
        }

    def companions(self, kind: Kind, seed: Any, key: Any) -> list[tuple[str, Stamped]]:
        # Resolving a case (CloseIncident) leaves an incidentresolution activity, created at the time.
        resolution = resolution_row(seed, key) if kind == "case" else None
        if resolution is None:
            return []
        return [(INCIDENT_RESOLUTIONS.name, Stamped(resolution, seed.resolved, seed.resolved))]

    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        simulator = DynamicsSimulator(store, token_ttl_seconds=token_ttl_seconds or DEFAULT_TOKEN_TTL)
        simulator.start()
        return Started(
            simulator,
            {
                "DYNAMICS_BASE_URL": simulator.base_url,
                "DYNAMICS_TOKEN_URL": simulator.token_url,
                "DYNAMICS_CLIENT_ID": simulator.client_id,
                "DYNAMICS_CLIENT_SECRET": simulator.client_secret,
            },
        )

    def write_case(self, store: Path) -> WriteCase:
        taken = {r["accountnumber"] for r in fetch_records(store, "accounts", include_deleted=True)}
        accepted: list[dict[str, Any]] = [
            {"accountnumber": "WB-10001", "name": "Fjord Maritime AS", "telephone1": "+47 22 33 44 55"},
            {"accountnumber": "WB-10002", "name": "Tramontana Foods S.L.", "revenue": 2500000.0},
            {
                "accountnumber": "WB-10004",
                "name": "Kestrel Avionics Ltd",
                "websiteurl": "https://kestrel.example",
            },
        ]
        if taken & {r["accountnumber"] for r in accepted}:
            raise ValueError("write-case keys must be new to the store")
        return WriteCase(
            object_name="accounts",
            external_id_field="accountnumber",
            accepted=accepted,
            # An account needs a name: Dataverse refuses the create with "Invalid argument".
            rejected=[{"accountnumber": "WB-10003", "websiteurl": "https://no-name.example"}],
            rejected_code="0x80040203",
        )

    def update_case(self, store: Path) -> UpdateCase:
        live = [r["accountid"] for r in fetch_records(store, "accounts")][:2]
        changed: list[dict[str, Any]] = [
            {
                "accountid": account_id,
                "new_erpcustomernumber": f"C-10{n:03d}",
                "new_openbalance": 1250.5,
                "new_overdueamount": 310.25,
                "new_lastpaymentdate": "2026-11-20",
                "telephone1": f"+49 40 555 01{n:02d}",
            }
            for n, account_id in enumerate(live, 1)
        ]
        return UpdateCase(
            object_name="accounts",
            changed=changed,
            field="new_erpcustomernumber",
            expected={str(r["accountid"]): str(r["new_erpcustomernumber"]) for r in changed},
            # A well-formed id no record has: with If-Match: * Dataverse answers 404, never creates.
            unknown={
                "accountid": str(uuid.uuid5(NAMESPACE, "no such account")),
                "new_erpcustomernumber": "C-9",
            },
            unknown_code="0x80040217",
        )


SANDBOX = DynamicsSandbox()
