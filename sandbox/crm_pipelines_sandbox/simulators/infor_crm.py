"""Infor CRM (formerly Saleslogix) SData simulator: the ``/sdata/slx/dynamic/-/`` endpoints in JSON.

What it serves, and the public documentation each part follows:

* **Auth**: HTTP Basic on every request with the CRM user's name and password; a missing or wrong
  one answers 401 with ``WWW-Authenticate: Basic realm="SData"`` and a diagnosis. Nothing expires
  (:meth:`expire_tokens` is a no-op: Basic has no token or session to lose).
* **Lists** (SData query paging): ``GET /sdata/slx/dynamic/-/accounts|contacts|opportunities
  ?format=json&select=...&where=...&orderBy=...&startIndex=1&count=100`` answering
  ``{"$url", "$totalResults", "$startIndex", "$itemsPerPage", "$resources": [{"$key", "$url",
  "$descriptor", ...properties}]}``. ``startIndex`` is 1-based; ``count`` defaults to 100 and is
  capped at 1000 (``$itemsPerPage`` reports the cap: the protocol lets a provider cut pages, and
  the public docs name no figure, so both are constructor settings). Without ``select`` every
  property is returned; with it, only the named ones (``Address/City`` reaches into the address);
  ``precedence=0`` returns none (SData core 6.5: ``$key``, ``$url``, ``$descriptor`` only).
  Without ``orderBy`` records come in key order.
* **Filters**: the SData query language, dates between ``@`` signs, e.g. ``where=ModifyDate ge
  @2026-11-25T10:00:00@ and ModifyDate lt @2026-11-26T00:00:00@``; comparisons on ``CreateDate``
  and ``ModifyDate`` are exact to the microsecond (the store's canonical instants). References are
  filtered by their key: ``Account.Id eq 'AA2EK0013056'``.
* **Values**: keys are 12-character Saleslogix ids (entity prefix, 4-character site code, 7-digit
  base-36 counter: ``AA2EK0013056``); dates in the JSON date form ``/Date(1764064800000)/``;
  references as ``{"$key", "$url"}`` (contact/opportunity ``Account``); the address as a nested
  ``Address`` object (``Address1``, ``City``, ``PostalCode``, ``Country``).
* **Deletes**: SData has no deleted-records feed and Infor CRM deletes rows outright: a deleted
  record simply disappears from lists and reads (404). The engine finds deletes by comparing keys.
* **Metadata**: ``GET /sdata/slx/dynamic/-/accounts/$schema`` answers the resource kind's XSD; a
  field added later (records.add_field, as a customizer adds a property) is in it, and in the
  records.
* **Limits**: Infor documents no request limit for SData. An optional sliding window
  (``rate_limit``) models a gateway in front of it: refusals answer 503 (configurable, e.g. 429)
  with ``Retry-After`` and a ``Transient`` diagnosis, as SData prescribes for transient errors.
* **Errors**: Infor CRM's JSON errors are an array of diagnoses, ``[{"severity": "Error",
  "sdataCode": "BadWhereSyntax", "message": ...}]`` (its own mobile client parses the body as an
  array and reads ``[0].message``); the SData codes follow the specification.
* **Writes**: ``POST /sdata/slx/dynamic/-/accounts`` creates (201, the new entry, ``Location``),
  ``PUT /sdata/slx/dynamic/-/accounts('KEY')`` updates (200). There is no batch and no upsert: a
  writer looks the record up by its external id (``where=ExternalAccountNo eq 'ERP-1001'``) and
  then posts or puts. Per-record errors are diagnoses: a required property missing is 400 with
  ``applicationCode: RequiredFieldMissing``; an unknown property is 400 ``PropertyNotFound``;
  :attr:`record_faults` injects a retryable 409 ``Transient`` for an external id or key. A PUT
  changes only the properties sent and never creates (a key that is no record: 404 ``NotFound``).
  Entries carry ``$etag`` (and a single read the ``ETag`` header); a PUT with ``If-Match`` naming
  an older version is refused with 412 and the entry as it is now (SData core 9.3, 9.5); without
  ``If-Match`` the PUT is applied. ``CreateUser``/``ModifyUser`` hold the 12-character ids of the
  users who saved (``ADMIN`` padded for the seeded records, the API user for saves through it).

Docs relied on:
  https://inforcrm.crmcloud.infor.com/SLXClient/help/Content/Dashboards/Creating_a_Where_Clause.htm
  (where clauses, operators, ``@`` dates), http://wiki.starfishetl.com/index.php/InforCRM_(SData)
  (Infor SData is Sage SData; related tables via include), http://sage.github.io/SData-2.0/ (query
  language 0212, paging 0604/0305, error payload 0310, query errors 0610, JSON format 20/04-0500,
  update concurrency 0903 and update errors 0905),
  github.com/Saleslogix/argos-sdk ``src/ErrorManager.ts`` (errors parsed as a JSON array) and
  ``src/Convert.ts`` (``/Date(ms)/`` dates).
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import string
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from crm_pipelines_sandbox.simulators.base import Faults, RateLimit, Request, Response
from crm_pipelines_sandbox.simulators.infor_crm_sdata import (
    BAD_QUERY,
    Diagnosis,
    ObjectView,
    SDataError,
    SDataSimulator,
    random_password,
)
from crm_pipelines_sandbox.simulators.records import (
    TIMESTAMP_FORMATS,
    FieldDef,
    ObjectDef,
    fetch_records,
    quote,
)
from crm_pipelines_sandbox.systems import (
    Kind,
    SandboxCrm,
    SeedAccount,
    SeedContact,
    SeedDeal,
    Started,
    UpdateCase,
    WriteCase,
)

PREFIX = "/sdata/slx/dynamic/-"
_BASE36 = string.digits + string.ascii_uppercase
_KEY_PREFIXES = {"account": "A", "contact": "C", "deal": "O"}
_TABLE_PREFIXES = {"accounts": "A", "contacts": "C", "opportunities": "O"}
_sdata_date = TIMESTAMP_FORMATS["sdata"]

ACCOUNTS = ObjectDef(
    name="accounts",
    key="Id",
    fields=(
        FieldDef("Id"),
        FieldDef("AccountName", required=True),
        FieldDef("MainPhone"),
        FieldDef("WebAddress"),
        FieldDef("Industry"),
        FieldDef("Revenue", "number"),
        FieldDef("Type"),
        FieldDef("Status"),
        FieldDef("ExternalAccountNo"),
        # A custom property (a column a customizer added to ACCOUNT and mapped in Application
        # Architect): the customer number in the ERP.
        FieldDef("ErpCustomerNumber"),
        FieldDef("Address", "json"),
        FieldDef("CreateDate", "datetime"),
        FieldDef("CreateUser"),
        FieldDef("ModifyDate", "datetime"),
        FieldDef("ModifyUser"),
    ),
    created_field="CreateDate",
    modified_field="ModifyDate",
)
CONTACTS = ObjectDef(
    name="contacts",
    key="Id",
    fields=(
        FieldDef("Id"),
        FieldDef("FirstName"),
        FieldDef("LastName", required=True),
        FieldDef("Email"),
        FieldDef("WorkPhone"),
        FieldDef("Title"),
        FieldDef("Account", required=True),
        FieldDef("Address", "json"),
        FieldDef("Birthday", "datetime"),
        FieldDef("CreateDate", "datetime"),
        FieldDef("CreateUser"),
        FieldDef("ModifyDate", "datetime"),
        FieldDef("ModifyUser"),
    ),
    created_field="CreateDate",
    modified_field="ModifyDate",
)
OPPORTUNITIES = ObjectDef(
    name="opportunities",
    key="Id",
    fields=(
        FieldDef("Id"),
        FieldDef("Description", required=True),
        FieldDef("SalesPotential", "number"),
        FieldDef("ExchangeRateCode"),
        FieldDef("Stage"),
        FieldDef("Status"),
        FieldDef("EstimatedClose", "datetime"),
        FieldDef("Account", required=True),
        FieldDef("ErpOrderNumber"),  # custom properties: the ERP's sales order and its invoices
        FieldDef("ErpInvoiceNumbers"),  # comma-separated (a 255-character column)
        FieldDef("CreateDate", "datetime"),
        FieldDef("CreateUser"),
        FieldDef("ModifyDate", "datetime"),
        FieldDef("ModifyUser"),
    ),
    created_field="CreateDate",
    modified_field="ModifyDate",
)
VIEWS = {
    "accounts": ObjectView(
        "accounts", external_id="ExternalAccountNo", created_by="CreateUser", modified_by="ModifyUser"
    ),
    "contacts": ObjectView(
        "contacts", references={"Account": "accounts"}, created_by="CreateUser", modified_by="ModifyUser"
    ),
    "opportunities": ObjectView(
        "opportunities", references={"Account": "accounts"}, created_by="CreateUser", modified_by="ModifyUser"
    ),
}
# Saleslogix user ids are 12 characters like every key (U + site code + counter); ADMIN is the
# administrator that entered the seeded records, the second one is the user the API runs as.
ADMIN_USER_ID = "ADMIN       "
API_USER_ID = "UQSIM0000001"
# The standard Saleslogix sales process; a closed deal's outcome is its Status ("Closed - Won").
STAGE_VALUES = {
    "prospecting": "1-Prospect",
    "qualification": "2-Qualification",
    "proposal": "3-Needs Analysis",
    "negotiation": "5-Negotiation",
    "closed_won": "Closed - Won",
    "closed_lost": "Closed - Lost",
}


def base36(number: int, width: int) -> str:
    out = ""
    while number:
        number, digit = divmod(number, 36)
        out = _BASE36[digit] + out
    return out.rjust(width, "0")[-width:]


class InforCrmSimulator(SDataSimulator):
    """Infor CRM's SData endpoint (``/sdata/slx/dynamic/-``) over an Infor CRM record store."""

    name = "infor_crm"
    prefix = PREFIX
    realm = "SData"
    etags = True
    api_user_id = API_USER_ID

    def __init__(
        self,
        store_path: Path,
        *,
        username: str = "admin",
        password: str = "",
        token_ttl_seconds: float | None = None,
        throttle_status: int = 503,
        default_count: int = 100,
        max_count: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.default_count = default_count
        self.max_count = max_count
        self.site_code = "QSIM"  # keys the simulator creates come from their own "site"
        super().__init__(
            store_path,
            username=username,
            password=password,
            views=VIEWS,
            token_ttl_seconds=token_ttl_seconds,
            throttle_status=throttle_status,
            host=host,
            port=port,
            rate_limit=rate_limit,
            faults=faults,
        )

    def diagnoses_body(self, diagnoses: Sequence[Diagnosis]) -> object:
        out: list[dict[str, object]] = []
        for item in diagnoses:
            body: dict[str, object] = {"severity": item.severity, "sdataCode": item.sdata_code}
            if item.application_code:
                body["applicationCode"] = item.application_code
            body["message"] = item.message
            if item.payload_path:
                body["payloadPath"] = item.payload_path
            out.append(body)
        return out

    def format_date(self, value: datetime) -> str:
        return _sdata_date(value)

    def entry_meta(self, obj: ObjectDef, row: sqlite3.Row) -> dict[str, object]:
        meta = super().entry_meta(obj, row)
        if obj.name == "accounts":
            descriptor = row["AccountName"]
        elif obj.name == "contacts":
            descriptor = " ".join(p for p in (row["FirstName"], row["LastName"]) if p)
        else:
            descriptor = row["Description"]
        meta["$descriptor"] = descriptor or ""
        return meta

    def new_key(self, conn: sqlite3.Connection, obj: ObjectDef) -> object:
        prefix = _TABLE_PREFIXES.get(obj.name, "Q")
        while True:
            key = prefix + self.site_code + base36(secrets.randbelow(36**7), 7)
            if conn.execute(f"SELECT 1 FROM {quote(obj.name)} WHERE Id = ?", (key,)).fetchone() is None:
                return key

    def list_resources(self, request: Request, resource: str) -> Response:
        # SData's other format is Atom XML, which a JSON client never asks for; say so plainly.
        wanted = (request.param("format") or "json").lower()
        if "json" not in wanted:
            raise SDataError(400, BAD_QUERY, f"format '{wanted}' is not served here; use format=json")
        return super().list_resources(request, resource)


# --- the sandbox contract --------------------------------------------------------------------------

_SEEDED_BY = {"CreateUser": ADMIN_USER_ID, "ModifyUser": ADMIN_USER_ID}
_key_state: weakref.WeakKeyDictionary[random.Random, dict[str, Any]] = weakref.WeakKeyDictionary()


def _address(
    street: str | None, city: str | None, postal: str | None, country: str | None, key: str
) -> dict[str, Any]:
    return {"$key": key, "Address1": street, "City": city, "PostalCode": postal, "Country": country}


class InforCrmSandbox(SandboxCrm):
    """Infor CRM in the sandbox: accounts, contacts and opportunities of the dynamic SData feed."""

    system = "infor_crm"
    timestamp_format = "sdata"
    objects = (ACCOUNTS, CONTACTS, OPPORTUNITIES)
    kinds: Mapping[str, str] = {"account": "accounts", "contact": "contacts", "deal": "opportunities"}
    stage_values: Mapping[str, str] = STAGE_VALUES

    def new_key(self, kind: Kind, rng: random.Random) -> Any:
        # One site code and one counter per build (per generator): unique and deterministic.
        state = _key_state.setdefault(
            rng, {"site": "".join(rng.choice(_BASE36) for _ in range(4)), "next": rng.randrange(1, 36**4)}
        )
        state["next"] += 1
        return _KEY_PREFIXES[kind] + state["site"] + base36(state["next"], 7)

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        address_key = "a" + str(key)[1:]
        if kind == "account":
            assert isinstance(seed, SeedAccount)
            return {
                "Id": key,
                "AccountName": seed.name,
                "MainPhone": seed.phone,
                "WebAddress": seed.website,
                "Industry": seed.industry,
                "Revenue": float(seed.annual_revenue) if seed.annual_revenue else None,
                "Type": "Customer",
                "Status": "Active",
                "ExternalAccountNo": None,
                "Address": _address(seed.street, seed.city, seed.postal_code, seed.country, address_key),
                **_SEEDED_BY,
            }
        if kind == "contact":
            assert isinstance(seed, SeedContact)
            return {
                "Id": key,
                "FirstName": seed.first_name,
                "LastName": seed.last_name,
                "Email": seed.email,
                "WorkPhone": seed.phone,
                "Title": seed.title,
                "Account": refs.get(seed.account_ref) if seed.account_ref else None,
                "Address": _address(seed.street, seed.city, seed.postal_code, seed.country, address_key),
                "Birthday": _close_date(seed.birth_date),
                **_SEEDED_BY,
            }
        assert isinstance(seed, SeedDeal)
        closed = {"closed_won": "Closed - Won", "closed_lost": "Closed - Lost"}
        return {
            "Id": key,
            "Description": seed.name,
            "SalesPotential": float(seed.amount) if seed.amount else None,
            "ExchangeRateCode": seed.currency,
            "Stage": STAGE_VALUES[seed.stage],
            "Status": closed.get(seed.stage, "Open"),
            "EstimatedClose": _close_date(seed.close_date),
            "Account": refs.get(seed.account_ref) if seed.account_ref else None,
            **_SEEDED_BY,
        }

    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        simulator = InforCrmSimulator(
            store,
            username=f"sandbox.{secrets.token_hex(3)}",
            password=random_password(),
            token_ttl_seconds=token_ttl_seconds,
        )
        simulator.start()
        env = {
            "INFOR_CRM_BASE_URL": simulator.base_url,
            "INFOR_CRM_USERNAME": simulator.username,
            "INFOR_CRM_PASSWORD": simulator.password,
        }
        return Started(simulator, env)

    def write_case(self, store: Path) -> WriteCase:
        return WriteCase(
            object_name="accounts",
            external_id_field="ExternalAccountNo",
            accepted=[
                {
                    "ExternalAccountNo": "ERP-10001",
                    "AccountName": "Fjordline Shipping AS",
                    "Industry": "Transportation",
                },
                {
                    "ExternalAccountNo": "ERP-10002",
                    "AccountName": "Kestrel Robotics GmbH",
                    "MainPhone": "+49 89 1234 5678",
                },
            ],
            # Infor CRM refuses an account without a name (AccountName is required).
            rejected=[{"ExternalAccountNo": "ERP-10003", "WebAddress": "https://www.nameless.example"}],
            rejected_code="RequiredFieldMissing",
        )

    def update_case(self, store: Path) -> UpdateCase:
        accounts = sorted(fetch_records(store, "accounts"), key=lambda r: str(r["Id"]))[:3]
        changed = [
            {"$key": r["Id"], "ErpCustomerNumber": f"K-{30_600 + n}", "MainPhone": f"+1 312 555 {n:04d}"}
            for n, r in enumerate(accounts, start=1)
        ]
        return UpdateCase(
            object_name="accounts",
            changed=changed,
            field="ErpCustomerNumber",
            expected={str(r["$key"]): r["ErpCustomerNumber"] for r in changed},
            # A PUT to a key Infor CRM does not have is 404: SData never creates on a PUT.
            unknown={"$key": "AQSIMZZZZZZZ", "ErpCustomerNumber": "K-39999"},
            unknown_code="NotFound",
        )


def _close_date(value: date | None) -> str | None:
    if value is None:
        return None
    return _sdata_date(datetime(value.year, value.month, value.day, tzinfo=UTC))


SANDBOX = InforCrmSandbox()
