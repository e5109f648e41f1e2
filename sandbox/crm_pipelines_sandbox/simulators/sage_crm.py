"""Sage CRM RESTful API simulator (the SData 2.0 ``sagecrm2`` provider of Sage CRM 2019 R2 and later).

What it serves, and the public documentation each part follows:

* **Auth**: ``Authorization: Basic`` with a Sage CRM user's name and password on every request
  (the API is stateless: no login session). A missing or wrong one answers 401 with
  ``WWW-Authenticate: Basic`` and an SData diagnosis. Nothing expires (:meth:`expire_tokens` is a
  no-op).
* **Lists**: ``GET /sdata/crmj/sagecrm2/-/Company|Person|Opportunity?where=...&orderBy=...
  &select=...&startIndex=1&count=100`` answering the SData 2.0 JSON feed ``{"$url",
  "$totalResults", "$startIndex", "$itemsPerPage", "$resources": [{"$key", "$url", ...fields}]}``.
  Resource and field names are case-insensitive, as Sage CRM's are (``company``, ``Comp_Name``).
  ``count`` defaults to 100 and is capped at 1000 (the public docs name no figure: both are
  constructor settings; ``$itemsPerPage`` reports the cap). Without ``orderBy`` records come in id
  order.
* **Filters**: ``where`` with ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``, ``like``, ``in``,
  ``between ... and``, ``and``, ``or`` and dates between ``@`` signs:
  ``where=comp_updateddate ge @2026-11-25T10:00:00@``; comparisons on the created/updated dates are
  exact. Dates render as ISO 8601 UTC (``2026-11-25T10:00:00Z``), as SData 2.0 JSON prescribes.
* **Linked entities**: Sage CRM keeps addresses, phones and e-mails in their own tables. What a sync
  needs is served the documented simplest way: the phone and e-mail columns Sage CRM keeps on the
  company and person rows themselves (``comp_phonecountrycode``, ``comp_phoneareacode``,
  ``comp_phonenumber``, ``comp_emailaddress``, ``pers_*`` likewise), and the primary address
  embedded when asked for with ``include=address`` (``"address": {"addr_addressid",
  "addr_address1", "addr_city", "addr_postcode", "addr_country"}``), as in the Sage CRM help's
  ``include=person,address,phoneCollection,emailCollection`` example.
* **Deletes**: Sage CRM soft-deletes: the row stays with ``comp_deleted = 1`` (``pers_deleted``,
  ``oppo_deleted``), and listings leave such rows out. A ``where`` that names the deleted column
  itself (``comp_deleted eq 1``) is answered over every row, so a sync can ask for the deleted ones
  (assumption: the public docs do not say; the column is a plain column of the table and the
  filter goes through to SQL). Reads of a deleted record answer 404.
* **Metadata**: ``GET /sdata/crmj/sagecrm2/-/Company/$schema`` answers the entity's XSD, with
  fields added later (records.add_field, as an admin adds a column in Customization).
* **Limits**: none documented. An optional sliding window (``rate_limit``) models a gateway:
  refusals answer 503 (configurable, e.g. 429) with ``Retry-After`` and a ``Transient`` diagnosis.
* **Errors**: SData 2.0 JSON diagnoses: ``{"$diagnoses": [{"$severity": "Error", "$sdataCode":
  "BadWhereSyntax", "$message": ...}]}``.
* **Writes**: ``POST /sdata/crmj/sagecrm2/-/Company`` creates (201, the entry with the new
  ``comp_companyid``), ``PATCH`` (or ``PUT``) ``/Company('43')`` updates (200). No batch, no upsert
  by another key: a writer looks up by its external id (here the custom column ``comp_externalid``,
  as ERP integrations add one) and then posts or patches. Per-record errors are diagnoses: a
  required field missing is 400 ``RequiredFieldMissing``; an unknown field 400 ``PropertyNotFound``;
  :attr:`record_faults` injects a retryable 409 ``Transient``. An update changes only the columns
  sent, stamps ``*_updateddate`` and ``*_updatedby`` (the API user's id) and never creates: an id that
  is no (live) record is 404 ``NotFound``. Custom columns follow Sage's naming (the entity's column
  prefix; a currency column has its currency in ``<column>_cid``); date-times sent as ISO 8601 are
  kept as the API renders them.

Docs relied on:
  https://developer.sage.com/crm/get-started (Basic auth, ``/sdata/{install}j/sagecrm2/-/{resource}``),
  https://developer.sage.com/crm/reference/2024R2/ (resources; orderBy and where operators added in
  2024 R2), https://communityhub.sage.com/sage-global-solutions/sage-crm/b/sage-crm-hints-tips-and-tricks/posts/sage-crm-2024-r2-restful-api-enhancements---new-query-parameters-and-operators
  (operators, examples), https://help.sagecrm.com/on_premise/en/2024R2/Dev/Content/Developer/SD_URLs.htm
  (``$schema``, ``include=address``), community.sagecrm.com "Sage CRM 2019 R2: Examples of Create
  Read Update and Delete actions with the REST API" and "Ensuring best performance using the REST
  API" (entry/feed/diagnosis responses, PATCH updates), blog.ivankahl.com "Using SData 2.0 in Sage
  CRM" parts 2 and 4 (PATCH, DELETE), http://sage.github.io/SData-2.0/ (query language, paging,
  JSON format, error payload).
"""

from __future__ import annotations

import random
import re
import secrets
import sqlite3
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from crm_pipelines_sandbox.simulators.base import Faults, RateLimit
from crm_pipelines_sandbox.simulators.infor_crm_sdata import (
    Diagnosis,
    ObjectView,
    SDataSimulator,
    Where,
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

PREFIX = "/sdata/crmj/sagecrm2/-"
_iso = TIMESTAMP_FORMATS["iso_z"]

COMPANY = ObjectDef(
    name="Company",
    key="comp_companyid",
    fields=(
        FieldDef("comp_companyid", "integer"),
        FieldDef("comp_name", required=True),
        FieldDef("comp_type"),
        FieldDef("comp_status"),
        FieldDef("comp_website"),
        FieldDef("comp_sector"),
        FieldDef("comp_revenue", "number"),
        FieldDef("comp_phonecountrycode"),
        FieldDef("comp_phoneareacode"),
        FieldDef("comp_phonenumber"),
        FieldDef("comp_emailaddress"),
        FieldDef("comp_externalid"),
        # Custom columns (Administration > Customization > Company > Fields): the ERP's customer
        # number and finance status. A currency column comes with its currency, <column>_cid.
        FieldDef("comp_erpcustomernumber"),
        FieldDef("comp_erpopenbalance", "number"),
        FieldDef("comp_erpopenbalance_cid"),
        FieldDef("comp_erpoverdueamount", "number"),
        FieldDef("comp_erpoverdueamount_cid"),
        FieldDef("comp_erplastpaymentdate", "datetime"),
        FieldDef("address", "json"),
        FieldDef("comp_createdby", "integer"),
        FieldDef("comp_createddate", "datetime"),
        FieldDef("comp_updatedby", "integer"),
        FieldDef("comp_updateddate", "datetime"),
        FieldDef("comp_deleted", "integer"),
    ),
    created_field="comp_createddate",
    modified_field="comp_updateddate",
    deleted_flag="comp_deleted",
)
PERSON = ObjectDef(
    name="Person",
    key="pers_personid",
    fields=(
        FieldDef("pers_personid", "integer"),
        FieldDef("pers_companyid", "integer"),
        FieldDef("pers_firstname"),
        FieldDef("pers_lastname", required=True),
        FieldDef("pers_title"),
        FieldDef("pers_emailaddress"),
        FieldDef("pers_phonecountrycode"),
        FieldDef("pers_phoneareacode"),
        FieldDef("pers_phonenumber"),
        FieldDef("address", "json"),
        FieldDef("pers_createdby", "integer"),
        FieldDef("pers_createddate", "datetime"),
        FieldDef("pers_updatedby", "integer"),
        FieldDef("pers_updateddate", "datetime"),
        FieldDef("pers_deleted", "integer"),
    ),
    created_field="pers_createddate",
    modified_field="pers_updateddate",
    deleted_flag="pers_deleted",
)
OPPORTUNITY = ObjectDef(
    name="Opportunity",
    key="oppo_opportunityid",
    fields=(
        FieldDef("oppo_opportunityid", "integer"),
        FieldDef("oppo_primarycompanyid", "integer"),
        FieldDef("oppo_description", required=True),
        FieldDef("oppo_forecast", "number"),
        FieldDef("oppo_forecast_cid"),
        FieldDef("oppo_stage"),
        FieldDef("oppo_status"),
        FieldDef("oppo_targetclose", "datetime"),
        FieldDef("oppo_erpordernumber"),  # custom columns: the ERP's sales order and its invoices
        FieldDef("oppo_erpinvoicenumbers"),  # comma-separated (a 255-character text column)
        FieldDef("oppo_createdby", "integer"),
        FieldDef("oppo_createddate", "datetime"),
        FieldDef("oppo_updatedby", "integer"),
        FieldDef("oppo_updateddate", "datetime"),
        FieldDef("oppo_deleted", "integer"),
    ),
    created_field="oppo_createddate",
    modified_field="oppo_updateddate",
    deleted_flag="oppo_deleted",
)
VIEWS = {
    "Company": ObjectView(
        "Company",
        include_only=frozenset({"address"}),
        external_id="comp_externalid",
        created_by="comp_createdby",
        modified_by="comp_updatedby",
    ),
    "Person": ObjectView(
        "Person",
        include_only=frozenset({"address"}),
        created_by="pers_createdby",
        modified_by="pers_updatedby",
    ),
    "Opportunity": ObjectView("Opportunity", created_by="oppo_createdby", modified_by="oppo_updatedby"),
}
# Users are rows of the Users table (user_userid): 1 is the System Administrator, who entered the
# seeded records; the API user is another one.
ADMIN_USER_ID = 1
API_USER_ID = 4
# Codes of Sage CRM's default opportunity stage list (oppo_stage); oppo_status says In Progress/Won/Lost.
STAGE_VALUES = {
    "prospecting": "Lead",
    "qualification": "Qualified",
    "proposal": "Proposal",
    "negotiation": "Negotiating",
    "closed_won": "Sold",
    "closed_lost": "NoSale",
}
_STATUS = {"closed_won": "Won", "closed_lost": "Lost"}
_PHONE = re.compile(r"^\+(\d{1,3})\s+(\d+)\s+(.+)$")


class SageCrmSimulator(SDataSimulator):
    """Sage CRM's RESTful API (``/sdata/crmj/sagecrm2/-``) over a Sage CRM record store."""

    name = "sage_crm"
    prefix = PREFIX
    realm = "Sage CRM"
    names_case_insensitive = True
    key_as_property = True
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

    def update_methods(self) -> tuple[str, ...]:
        return ("PATCH", "PUT")

    def diagnoses_body(self, diagnoses: Sequence[Diagnosis]) -> object:
        out: list[dict[str, object]] = []
        for item in diagnoses:
            body: dict[str, object] = {"$severity": item.severity, "$sdataCode": item.sdata_code}
            if item.application_code:
                body["$applicationCode"] = item.application_code
            body["$message"] = item.message
            if item.payload_path:
                body["$payloadPath"] = item.payload_path
            out.append(body)
        return {"$diagnoses": out}

    def format_date(self, value: datetime) -> str:
        return _iso(value)

    def visibility(self, obj: ObjectDef, where: Where) -> str:
        # Naming the deleted flag in the filter asks about deleted rows too (see the module docs).
        if obj.deleted_flag and obj.deleted_flag in where.columns:
            return ""
        return "_deleted_at IS NULL"

    def new_key(self, conn: sqlite3.Connection, obj: ObjectDef) -> object:
        # Sage CRM ids are identity columns: the next one after the highest.
        found = conn.execute(f"SELECT MAX({quote(obj.key)}) FROM {quote(obj.name)}").fetchone()[0]
        return int(found or 0) + 1


# --- the sandbox contract --------------------------------------------------------------------------

_key_state: weakref.WeakKeyDictionary[random.Random, dict[str, int]] = weakref.WeakKeyDictionary()


def split_phone(phone: str | None) -> tuple[str | None, str | None, str | None]:
    """``+49 40 3012 4455`` as Sage CRM's country code, area code and number columns."""
    if not phone:
        return None, None, None
    match = _PHONE.match(phone.strip())
    if match is None:
        return None, None, phone
    return match.group(1), match.group(2), match.group(3)


class SageCrmSandbox(SandboxCrm):
    """Sage CRM in the sandbox: Company, Person and Opportunity of the RESTful API."""

    system = "sage_crm"
    timestamp_format = "iso_z"
    objects = (COMPANY, PERSON, OPPORTUNITY)
    kinds: Mapping[str, str] = {"account": "Company", "contact": "Person", "deal": "Opportunity"}
    stage_values: Mapping[str, str] = STAGE_VALUES

    def new_key(self, kind: Kind, rng: random.Random) -> Any:
        # Identity-like ids per table, from a random start: unique and deterministic per build.
        state = _key_state.setdefault(rng, {})
        if kind not in state:
            state[kind] = rng.randrange(10, 2000)
        state[kind] += 1
        return state[kind]

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "account":
            assert isinstance(seed, SeedAccount)
            country, area, number = split_phone(seed.phone)
            return {
                "comp_companyid": key,
                "comp_name": seed.name,
                "comp_type": "Customer",
                "comp_status": "Active",
                "comp_website": seed.website,
                "comp_sector": seed.industry,
                "comp_revenue": float(seed.annual_revenue) if seed.annual_revenue else None,
                "comp_phonecountrycode": country,
                "comp_phoneareacode": area,
                "comp_phonenumber": number,
                "address": _address(key, seed.street, seed.city, seed.postal_code, seed.country),
                "comp_createdby": ADMIN_USER_ID,
                "comp_updatedby": ADMIN_USER_ID,
            }
        if kind == "contact":
            assert isinstance(seed, SeedContact)
            country, area, number = split_phone(seed.phone)
            return {
                "pers_personid": key,
                "pers_companyid": refs.get(seed.account_ref) if seed.account_ref else None,
                "pers_firstname": seed.first_name,
                "pers_lastname": seed.last_name,
                "pers_title": seed.title,
                "pers_emailaddress": seed.email,
                "pers_phonecountrycode": country,
                "pers_phoneareacode": area,
                "pers_phonenumber": number,
                "address": _address(
                    100_000 + int(key), seed.street, seed.city, seed.postal_code, seed.country
                ),
                "pers_createdby": ADMIN_USER_ID,
                "pers_updatedby": ADMIN_USER_ID,
            }
        assert isinstance(seed, SeedDeal)
        return {
            "oppo_opportunityid": key,
            "oppo_primarycompanyid": refs.get(seed.account_ref) if seed.account_ref else None,
            "oppo_description": seed.name,
            "oppo_forecast": float(seed.amount) if seed.amount else None,
            "oppo_forecast_cid": seed.currency,
            "oppo_stage": STAGE_VALUES[seed.stage],
            "oppo_status": _STATUS.get(seed.stage, "In Progress"),
            "oppo_targetclose": _close_date(seed.close_date),
            "oppo_createdby": ADMIN_USER_ID,
            "oppo_updatedby": ADMIN_USER_ID,
        }

    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        simulator = SageCrmSimulator(
            store,
            username=f"sandbox.{secrets.token_hex(3)}",
            password=random_password(),
            token_ttl_seconds=token_ttl_seconds,
        )
        simulator.start()
        env = {
            "SAGE_CRM_BASE_URL": simulator.base_url,
            "SAGE_CRM_USERNAME": simulator.username,
            "SAGE_CRM_PASSWORD": simulator.password,
        }
        return Started(simulator, env)

    def write_case(self, store: Path) -> WriteCase:
        return WriteCase(
            object_name="Company",
            external_id_field="comp_externalid",
            accepted=[
                {
                    "comp_externalid": "ERP-20001",
                    "comp_name": "Harbourside Foods Ltd",
                    "comp_sector": "Retail",
                },
                {
                    "comp_externalid": "ERP-20002",
                    "comp_name": "Quellwerk AG",
                    "comp_website": "https://quellwerk.ch",
                },
            ],
            # Sage CRM refuses a company without a name (comp_name is required).
            rejected=[{"comp_externalid": "ERP-20003", "comp_website": "https://nameless.example"}],
            rejected_code="RequiredFieldMissing",
        )

    def update_case(self, store: Path) -> UpdateCase:
        companies = sorted(fetch_records(store, "Company"), key=lambda r: int(r["comp_companyid"]))[:3]
        changed = [
            {
                "comp_companyid": r["comp_companyid"],
                "comp_erpcustomernumber": f"K-{40_700 + n}",
                "comp_erpopenbalance": 1250.0 * n,
                "comp_erpopenbalance_cid": "EUR",
                "comp_website": f"https://www.erp-{n}.example",
            }
            for n, r in enumerate(companies, start=1)
        ]
        return UpdateCase(
            object_name="Company",
            changed=changed,
            field="comp_erpcustomernumber",
            expected={str(r["comp_companyid"]): r["comp_erpcustomernumber"] for r in changed},
            # A PATCH of an id Sage CRM does not have is 404: it never creates.
            unknown={"comp_companyid": 987_654, "comp_erpcustomernumber": "K-49999"},
            unknown_code="NotFound",
        )


def _address(
    address_id: int, street: str | None, city: str | None, postcode: str | None, country: str | None
) -> dict[str, object]:
    return {
        "addr_addressid": address_id,
        "addr_address1": street,
        "addr_city": city,
        "addr_postcode": postcode,
        "addr_country": country,
    }


def _close_date(value: date | None) -> str | None:
    return None if value is None else _iso(datetime(value.year, value.month, value.day, tzinfo=UTC))


SANDBOX = SageCrmSandbox()
