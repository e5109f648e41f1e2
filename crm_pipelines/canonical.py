"""Canonical entities: the shape every source is mapped onto before deduplication and loading.

``record_id`` is ``"<source>:<source_id>"`` and identifies one source row everywhere (quarantine,
crosswalk, reconciliation). Column descriptions are shown in the Dagster UI and copied onto the
warehouse tables.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)


def _schema(*fields: tuple[str, pa.DataType, str]) -> pa.Schema:
    return pa.schema([pa.field(name, dtype, metadata={"description": doc}) for name, dtype, doc in fields])


_LINEAGE = (
    ("record_id", pa.string(), "Source row identity: `<source>:<source id>`."),
    (
        "source",
        pa.string(),
        "System the row came from: a CRM (salesforce, hubspot, ...), erp or finance_sftp.",
    ),
    ("source_id", pa.string(), "Primary key of the row in its source system."),
)

# Derived by the mapping from the source column that feeds ``phone`` (never declared per source): a
# phone that cannot be made E.164 (a national number without a country, a digit too many) keeps its
# digits and a flag, and the row flows on; only ``phone`` (E.164) reaches golden records and syncs.
_PHONE_EXTRAS = (
    (
        "phone_digits",
        pa.string(),
        "Digits of the phone as the source wrote it (parsable or not), for matching; never written back.",
    ),
    (
        "phone_quality",
        pa.string(),
        "'e164' when the source's phone was made E.164, 'unparsable' when it could not be, null when none.",
    ),
)
# Canonical columns a mapping fills from its ``phone`` column (see crm_pipelines/mapping/build.py).
PHONE_DERIVED = tuple(name for name, _, _ in _PHONE_EXTRAS)

ACCOUNT = _schema(
    *_LINEAGE,
    ("name", pa.string(), "Company name as the source spells it."),
    ("domain", pa.string(), "Web domain, lower case, without scheme or www."),
    (
        "phone",
        pa.string(),
        "Main phone number in E.164 (+4930123456); null when the source's could not be made E.164.",
    ),
    *_PHONE_EXTRAS,
    ("email", pa.string(), "Main e-mail address, lower case."),
    ("street", pa.string(), "Street address line."),
    ("city", pa.string(), "City."),
    ("postal_code", pa.string(), "Postal code."),
    ("country", pa.string(), "ISO 3166-1 alpha-2 country code."),
    ("industry", pa.string(), "Industry as the source names it."),
    ("vat_number", pa.string(), "VAT / tax registration number, upper case without spaces."),
    ("annual_revenue", MONEY, "Annual revenue in the account currency."),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

CONTACT = _schema(
    *_LINEAGE,
    ("account_record_id", pa.string(), "record_id of the contact's account in the same source."),
    ("first_name", pa.string(), "Given name."),
    ("last_name", pa.string(), "Family name."),
    ("email", pa.string(), "E-mail address, lower case."),
    ("phone", pa.string(), "Phone number in E.164; null when the source's could not be made E.164."),
    *_PHONE_EXTRAS,
    ("title", pa.string(), "Job title."),
    ("street", pa.string(), "Mailing street address line."),
    ("city", pa.string(), "Mailing city."),
    ("postal_code", pa.string(), "Mailing postal code, upper case, trimmed."),
    ("country", pa.string(), "Mailing country: ISO 3166-1 alpha-2 code."),
    # ISO text rather than DATE for now: identity resolution (crm_pipelines/identity/resolve.py) types
    # the canonical columns it loads and knows no DATE yet; the mapping's date transform has already
    # made every system's spelling one YYYY-MM-DD.
    ("birth_date", pa.string(), "Date of birth, ISO 8601 YYYY-MM-DD (personal data: kept out of the marts)."),
    (
        "government_id",
        pa.string(),
        "Government-issued personal identifier (Dynamics 365's governmentid: a national id or social "
        "security number), upper case, letters and digits only; sensitive personal data, used for "
        "matching and kept out of the marts.",
    ),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

OPPORTUNITY = _schema(
    *_LINEAGE,
    ("account_record_id", pa.string(), "record_id of the opportunity's account in the same source."),
    ("name", pa.string(), "Opportunity / deal name."),
    (
        "stage",
        pa.string(),
        "Canonical stage: prospecting, qualification, proposal, negotiation, closed_won, closed_lost.",
    ),
    ("amount", MONEY, "Expected amount."),
    ("currency", pa.string(), "ISO 4217 currency code."),
    ("close_date", pa.date32(), "Expected or actual close date."),
    ("is_closed", pa.bool_(), "True when the opportunity is closed (won or lost)."),
    ("is_won", pa.bool_(), "True when the opportunity is closed and won."),
    (
        "mirrors_record_id",
        pa.string(),
        "record_id of the opportunity this one mirrors in another system (a HubSpot deal kept in step "
        "with a Dynamics 365 opportunity); null for an opportunity of its own.",
    ),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

SALES_ORDER = _schema(
    *_LINEAGE,
    ("order_number", pa.string(), "ERP sales order number."),
    ("account_record_id", pa.string(), "record_id of the ordering customer."),
    ("order_date", pa.date32(), "Order date."),
    ("currency", pa.string(), "ISO 4217 currency code."),
    ("status", pa.string(), "Order status: open, shipped, invoiced, cancelled."),
    ("amount", MONEY, "Order total: sum of its lines."),
    ("line_count", pa.int32(), "Number of order lines."),
    ("crm_opportunity_ref", pa.string(), "CRM opportunity the order came from, when known."),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

INVOICE = _schema(
    *_LINEAGE,
    ("invoice_number", pa.string(), "Invoice number, unique across sources."),
    ("account_record_id", pa.string(), "record_id of the invoiced customer."),
    ("order_number", pa.string(), "Sales order the invoice bills, when known."),
    ("invoice_date", pa.date32(), "Invoice date."),
    ("due_date", pa.date32(), "Payment due date."),
    ("currency", pa.string(), "ISO 4217 currency code."),
    ("amount_net", MONEY, "Net amount."),
    ("amount_tax", MONEY, "Tax amount."),
    ("amount_gross", MONEY, "Gross amount (net + tax)."),
    ("status", pa.string(), "Invoice status: open, paid, cancelled."),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

PAYMENT = _schema(
    *_LINEAGE,
    ("invoice_number", pa.string(), "Invoice the payment settles."),
    ("payment_date", pa.date32(), "Value date of the payment."),
    ("amount", MONEY, "Amount paid."),
    ("currency", pa.string(), "ISO 4217 currency code."),
    ("method", pa.string(), "Payment method: bank_transfer, card, direct_debit, cheque."),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

LEAD = _schema(
    *_LINEAGE,
    (
        "contact_record_id",
        pa.string(),
        "record_id of the contact the lead is (a HubSpot contact in a lead stage) or was converted into.",
    ),
    ("first_name", pa.string(), "Given name."),
    ("last_name", pa.string(), "Family name."),
    ("email", pa.string(), "E-mail address, lower case."),
    ("phone", pa.string(), "Phone number in E.164; null when the source's could not be made E.164."),
    *_PHONE_EXTRAS,
    ("company", pa.string(), "Company name the lead gave."),
    ("title", pa.string(), "Job title."),
    ("country", pa.string(), "ISO 3166-1 alpha-2 country code."),
    (
        "lifecycle_stage",
        pa.string(),
        "Funnel stage: lead, mql (marketing qualified), sql (sales qualified), opportunity, customer.",
    ),
    ("status", pa.string(), "Lead status: new, working, nurturing, qualified, unqualified, converted."),
    (
        "lead_source",
        pa.string(),
        "Where the lead came from (web, event, referral, ...), as the source names it.",
    ),
    (
        "is_converted",
        pa.bool_(),
        "True once the lead became a contact/opportunity (or reached the sql stage).",
    ),
    ("created_at", TS, "When the lead was captured (UTC)."),
    ("converted_at", TS, "When the lead was converted or qualified (UTC), when known."),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

# "case" is an SQL keyword: the entity (and its tables core.support_case, staging.support_case) is
# support_case, so no analyst has to quote it; the mart is marts.fact_case.
SUPPORT_CASE = _schema(
    *_LINEAGE,
    ("case_number", pa.string(), "Case or ticket number as the system shows it to people."),
    ("account_record_id", pa.string(), "record_id of the case's account in the same source."),
    ("contact_record_id", pa.string(), "record_id of the person who raised the case, in the same source."),
    (
        "related_record_id",
        pa.string(),
        "record_id of the same case in the other system (a CRM case's service-desk ticket, or the reverse).",
    ),
    ("subject", pa.string(), "Subject line."),
    ("status", pa.string(), "Canonical status: new, open, pending, on_hold, solved, closed."),
    ("priority", pa.string(), "Canonical priority: low, normal, high, urgent."),
    ("case_type", pa.string(), "Kind of case: question, incident, problem, task (as the source names it)."),
    ("origin", pa.string(), "Channel the case came in by: email, web, phone, chat, api."),
    ("resolution", pa.string(), "How the case was resolved (text), once it is."),
    ("created_at", TS, "When the case was opened (UTC)."),
    ("resolved_at", TS, "When the case was solved or closed (UTC)."),
    ("updated_at", TS, "When the source last modified the row (UTC)."),
)

# Privacy classification of every canonical column: whether it is personal data (pii), special or
# sensitive personal data, and how the analyst views (crm_pipelines/privacy/masking.py) mask it:
# hash (a keyed token: the same value gives the same token, so joins still match), partial
# (j***@example.com, +49*******67) or none. A column missing here fails at import.
PRIVACY_CLASSES: dict[str, tuple[bool, bool, str]] = {
    # class: (pii, sensitive, masking)
    "public": (False, False, "none"),
    "identifier": (True, False, "hash"),  # names, e-mails used as join keys, street lines
    "contact_point": (True, False, "partial"),  # a business's e-mail or phone shown partly
    "sensitive": (True, True, "hash"),  # government ids, birth dates: never shown in clear
}
_LINEAGE_CLASSES = {"record_id": "public", "source": "public", "source_id": "public"}
_PHONE_CLASSES = {"phone": "contact_point", "phone_digits": "identifier", "phone_quality": "public"}
CLASSIFICATION: dict[str, dict[str, str]] = {
    "account": {
        **_LINEAGE_CLASSES,
        **_PHONE_CLASSES,
        **dict.fromkeys(("name", "domain", "street", "city", "postal_code", "country"), "public"),
        **dict.fromkeys(("industry", "vat_number", "annual_revenue", "updated_at"), "public"),
        # A sole trader's company e-mail is a person's: shown partly.
        "email": "contact_point",
    },
    "contact": {
        **_LINEAGE_CLASSES,
        **_PHONE_CLASSES,
        **dict.fromkeys(("first_name", "last_name", "email", "street"), "identifier"),
        **dict.fromkeys(("account_record_id", "title", "city", "postal_code", "country"), "public"),
        "updated_at": "public",
        "birth_date": "sensitive",
        "government_id": "sensitive",
    },
    "opportunity": dict.fromkeys(OPPORTUNITY.names, "public"),
    "sales_order": dict.fromkeys(SALES_ORDER.names, "public"),
    "invoice": dict.fromkeys(INVOICE.names, "public"),
    "payment": dict.fromkeys(PAYMENT.names, "public"),
    "lead": {
        **dict.fromkeys(LEAD.names, "public"),
        **_PHONE_CLASSES,
        **dict.fromkeys(("first_name", "last_name", "email"), "identifier"),
    },
    "support_case": {
        **dict.fromkeys(SUPPORT_CASE.names, "public"),
        # Free text people type about themselves.
        **dict.fromkeys(("subject", "resolution"), "identifier"),
    },
}


def _classified(entity: str, schema: pa.Schema) -> pa.Schema:
    """The schema with each field's privacy class in its metadata (b"pii", b"sensitive", b"masking")."""
    classes = CLASSIFICATION.get(entity, {})
    unclassified = [name for name in schema.names if name not in classes]
    unknown = sorted(set(classes) - set(schema.names))
    if unclassified or unknown:
        raise ValueError(
            f"canonical.CLASSIFICATION[{entity!r}]: unclassified columns {unclassified}, unknown columns {unknown}"
        )
    fields = []
    for field in schema:
        if classes[field.name] not in PRIVACY_CLASSES:
            raise ValueError(f"canonical.CLASSIFICATION[{entity!r}][{field.name!r}]: unknown class")
        pii, sensitive, masking = PRIVACY_CLASSES[classes[field.name]]
        privacy = {b"pii": str(pii).lower(), b"sensitive": str(sensitive).lower(), b"masking": masking}
        fields.append(field.with_metadata({**(field.metadata or {}), **privacy}))
    return pa.schema(fields)


ENTITIES: dict[str, pa.Schema] = {
    "account": _classified("account", ACCOUNT),
    "contact": _classified("contact", CONTACT),
    "opportunity": _classified("opportunity", OPPORTUNITY),
    "sales_order": _classified("sales_order", SALES_ORDER),
    "invoice": _classified("invoice", INVOICE),
    "payment": _classified("payment", PAYMENT),
    "lead": _classified("lead", LEAD),
    "support_case": _classified("support_case", SUPPORT_CASE),
}
# Fields that survivorship chooses per golden record (the canonical columns minus lineage,
# updated_at, which becomes the newest member's, and links, which the crosswalk resolves).
SURVIVOR_FIELDS: dict[str, tuple[str, ...]] = {
    "account": (
        "name",
        "domain",
        "phone",
        "email",
        "street",
        "city",
        "postal_code",
        "country",
        "industry",
        "vat_number",
        "annual_revenue",
    ),
    "contact": (
        "first_name",
        "last_name",
        "email",
        "phone",
        "title",
        "street",
        "city",
        "postal_code",
        "country",
        "birth_date",
        "government_id",
    ),
}
# Survivor fields the golden syncs do not write back into the CRMs (yet): a person's mailing address
# and birth date are read from every CRM and chosen for the golden record, not pushed elsewhere.
NOT_WRITTEN_BACK: dict[str, tuple[str, ...]] = {
    "contact": ("street", "city", "postal_code", "birth_date", "government_id")
}

# Parties are deduplicated across systems into golden records; facts are merged by their record_id.
PARTY_ENTITIES = ("account", "contact")
FACT_ENTITIES = ("opportunity", "sales_order", "invoice", "payment", "lead", "support_case")

# Quarantined rows, in the lake and in ops.quarantine.
QUARANTINE = _schema(
    ("source", pa.string(), "System the row came from."),
    ("entity", pa.string(), "Canonical entity or raw dataset the row belongs to."),
    ("record_id", pa.string(), "record_id of the row, or `<file>:<line>` when it has none."),
    ("record", pa.string(), "The offending row: JSON for a record, the raw text for a file line."),
    ("rule", pa.string(), "Name of the rule that failed."),
    ("reason", pa.string(), "Human-readable reason: field, value and what was expected."),
)


def descriptions(schema: pa.Schema) -> dict[str, str]:
    """Column name -> description, from the schema's field metadata."""
    out: dict[str, str] = {}
    for field in schema:
        meta = field.metadata or {}
        out[field.name] = meta.get(b"description", b"").decode()
    return out
