"""SQLite stores behind the CRM simulators: what a simulator serves is what is in its store.

A Salesforce store holds one table per sObject (``Account``, ``Contact``, ``Opportunity``) whose
columns are named exactly as the API fields, plus ``_fields`` with each field's Salesforce type so
the simulator can render JSON numbers and booleans. A HubSpot store holds ``companies``,
``contacts`` and ``deals`` with ``id``, ``createdAt``, ``updatedAt``, ``archived``, ``archivedAt``,
one TEXT column per property and, for deals, ``company_id`` (served as an association).

The helpers here (insert, update, touch, delete, add a field) are what tests and later features use
to change the data between two runs, the way users change a real CRM.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

SALESFORCE = "salesforce"
HUBSPOT = "hubspot"

# (API field name, Salesforce field type), in the order of docs/contracts.md.
SALESFORCE_OBJECTS: dict[str, tuple[tuple[str, str], ...]] = {
    "Account": (
        ("Id", "id"),
        ("Name", "string"),
        ("Website", "url"),
        ("Phone", "phone"),
        ("BillingStreet", "textarea"),
        ("BillingCity", "string"),
        ("BillingPostalCode", "string"),
        ("BillingCountry", "string"),
        ("Industry", "picklist"),
        ("AnnualRevenue", "currency"),
        ("CreatedDate", "datetime"),
        ("CreatedById", "reference"),
        ("LastModifiedDate", "datetime"),
        ("LastModifiedById", "reference"),
        ("SystemModstamp", "datetime"),
        ("IsDeleted", "boolean"),
        # Custom fields the ERP sync fills in (Setup > Object Manager; API names end in __c).
        ("ERP_Customer_Number__c", "string"),
        ("Open_Balance__c", "currency"),
        ("Overdue_Amount__c", "currency"),
        ("Last_Payment_Date__c", "date"),
    ),
    "Contact": (
        ("Id", "id"),
        ("AccountId", "reference"),
        ("FirstName", "string"),
        ("LastName", "string"),
        ("Email", "email"),
        ("Phone", "phone"),
        ("Title", "string"),
        ("MailingCountry", "string"),
        ("MailingStreet", "textarea"),
        ("MailingCity", "string"),
        ("MailingPostalCode", "string"),
        ("Birthdate", "date"),
        ("CreatedDate", "datetime"),
        ("CreatedById", "reference"),
        ("LastModifiedDate", "datetime"),
        ("LastModifiedById", "reference"),
        ("SystemModstamp", "datetime"),
        ("IsDeleted", "boolean"),
    ),
    "Opportunity": (
        ("Id", "id"),
        ("AccountId", "reference"),
        ("Name", "string"),
        ("StageName", "picklist"),
        ("Amount", "currency"),
        ("CurrencyIsoCode", "picklist"),
        ("CloseDate", "date"),
        ("IsClosed", "boolean"),
        ("IsWon", "boolean"),
        ("CreatedDate", "datetime"),
        ("CreatedById", "reference"),
        ("LastModifiedDate", "datetime"),
        ("LastModifiedById", "reference"),
        ("SystemModstamp", "datetime"),
        ("IsDeleted", "boolean"),
        ("ERP_Order_Number__c", "string"),
        ("ERP_Invoice_Numbers__c", "string"),  # comma-separated, 255 characters
    ),
    # A prospect before it is qualified; converting it sets IsConverted, ConvertedDate and the Contact
    # (and Account, Opportunity) it became.
    "Lead": (
        ("Id", "id"),
        ("FirstName", "string"),
        ("LastName", "string"),
        ("Email", "email"),
        ("Phone", "phone"),
        ("Company", "string"),
        ("Title", "string"),
        ("Country", "string"),
        ("Status", "picklist"),
        ("LeadSource", "picklist"),
        ("IsConverted", "boolean"),
        ("ConvertedDate", "date"),
        ("ConvertedContactId", "reference"),
        ("CreatedDate", "datetime"),
        ("CreatedById", "reference"),
        ("LastModifiedDate", "datetime"),
        ("LastModifiedById", "reference"),
        ("SystemModstamp", "datetime"),
        ("IsDeleted", "boolean"),
    ),
    # A customer's issue (Service Cloud). CaseNumber is an auto-number; IsClosed and ClosedDate follow
    # from a status the org marks closed (Closed by default). There is no standard resolution field.
    "Case": (
        ("Id", "id"),
        ("CaseNumber", "string"),
        ("AccountId", "reference"),
        ("ContactId", "reference"),
        ("Subject", "string"),
        ("Description", "textarea"),
        ("Status", "picklist"),
        ("Priority", "picklist"),
        ("Origin", "picklist"),
        ("Type", "picklist"),
        ("Reason", "picklist"),
        ("IsClosed", "boolean"),
        ("ClosedDate", "datetime"),
        ("CreatedDate", "datetime"),
        ("CreatedById", "reference"),
        ("LastModifiedDate", "datetime"),
        ("LastModifiedById", "reference"),
        ("SystemModstamp", "datetime"),
        ("IsDeleted", "boolean"),
    ),
}
# The org's integration user: who created and last changed a record unless a write says otherwise.
SALESFORCE_INTEGRATION_USER = "005Qy000000IntegAAA"
_SALESFORCE_USER_FIELDS = frozenset({"CreatedById", "LastModifiedById"})
SALESFORCE_KEY_PREFIXES = {
    "Case": "500",
    "Account": "001",
    "Contact": "003",
    "Opportunity": "006",
    "Lead": "00Q",
}
SALESFORCE_NUMERIC_TYPES = frozenset({"currency", "double", "percent"})
SALESFORCE_INTEGER_TYPES = frozenset({"int"})

# Properties per object type, in the order of docs/contracts.md.
HUBSPOT_OBJECTS: dict[str, tuple[str, ...]] = {
    "companies": (
        "name",
        "domain",
        "phone",
        "address",
        "city",
        "zip",
        "country",
        "industry",
        "annualrevenue",
        "createdate",
        "hs_lastmodifieddate",
        "erp_customer_number",
    ),
    "contacts": (
        "firstname",
        "lastname",
        "email",
        "phone",
        "jobtitle",
        "country",
        "address",
        "city",
        "zip",
        "date_of_birth",
        "associatedcompanyid",
        "createdate",
        "lastmodifieddate",
        "hs_lastmodifieddate",
        # HubSpot keeps leads as contacts: the funnel stage (subscriber, lead, marketingqualifiedlead,
        # salesqualifiedlead, opportunity, customer, evangelist, other), the lead status, and when the
        # contact entered each lead stage.
        "lifecyclestage",
        "hs_lead_status",
        "hs_lifecyclestage_lead_date",
        "hs_lifecyclestage_marketingqualifiedlead_date",
        "hs_lifecyclestage_salesqualifiedlead_date",
    ),
    "deals": (
        "dealname",
        "amount",
        "deal_currency_code",
        "dealstage",
        "pipeline",
        "closedate",
        "createdate",
        "hs_lastmodifieddate",
        "erp_order_number",
        "erp_invoice_numbers",
        "dynamics_opportunity_id",
    ),
}
# Custom properties (Settings > Properties) and their labels; every other property is HubSpot's own.
HUBSPOT_CUSTOM_PROPERTIES: dict[str, dict[str, str]] = {
    "companies": {"erp_customer_number": "ERP customer number"},
    "deals": {
        "erp_order_number": "ERP order number",
        "erp_invoice_numbers": "ERP invoice numbers",
        # Unique (hasUniqueValue): the Dynamics 365 opportunity a deal mirrors, the upsert key of the
        # closed-loop sync (syncs.yaml dynamics_opportunities_to_hubspot).
        "dynamics_opportunity_id": "Dynamics 365 opportunity id",
    },
}
HUBSPOT_SYSTEM_COLUMNS = ("id", "createdAt", "updatedAt", "archived", "archivedAt")
HUBSPOT_ASSOCIATION_COLUMNS = {"deals": ("company_id",)}
# The property HubSpot moves when a record changes (contacts predate the hs_ prefix).
HUBSPOT_MODIFIED_PROPERTY = {
    "companies": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
    "deals": "hs_lastmodifieddate",
}


def hubspot_modified_properties(object_type: str) -> tuple[str, ...]:
    """Every property a change moves: the object's own, and ``hs_lastmodifieddate`` (which contacts have too)."""
    return tuple(dict.fromkeys((HUBSPOT_MODIFIED_PROPERTY[object_type], "hs_lastmodifieddate")))


def _sqlite_type(sf_type: str) -> str:
    if sf_type in SALESFORCE_NUMERIC_TYPES:
        return "REAL"
    if sf_type in SALESFORCE_INTEGER_TYPES or sf_type == "boolean":
        return "INTEGER"
    return "TEXT"


def salesforce_columns(sobject: str) -> tuple[str, ...]:
    """Column names of a Salesforce table as created by :func:`create_salesforce_store`."""
    return tuple(name for name, _ in SALESFORCE_OBJECTS[sobject])


def hubspot_columns(object_type: str) -> tuple[str, ...]:
    """Column names of a HubSpot table as created by :func:`create_hubspot_store`."""
    return (
        HUBSPOT_SYSTEM_COLUMNS
        + HUBSPOT_OBJECTS[object_type]
        + HUBSPOT_ASSOCIATION_COLUMNS.get(object_type, ())
    )


def sf_datetime(value: datetime) -> str:
    """A datetime as Salesforce sends it: ``2026-11-25T10:00:00.000+0000`` (UTC, second precision)."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return utc.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def hs_datetime(value: datetime) -> str:
    """A datetime as HubSpot sends it: ``2026-11-25T10:00:00.123Z`` (UTC, millisecond precision)."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def open_store(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a store; read-only connections use SQLite's URI mode so a simulator never writes."""
    if readonly:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn
    return _connect(Path(path))


def store_system(conn: sqlite3.Connection) -> str:
    """'salesforce' or 'hubspot', as recorded in the store's ``_meta`` table."""
    row = conn.execute("SELECT value FROM _meta WHERE key = 'system'").fetchone()
    if row is None:
        raise ValueError("not a simulator store: no system recorded in _meta")
    return str(row[0])


def create_salesforce_store(path: Path) -> sqlite3.Connection:
    """Create an empty Salesforce store (tables without secondary indexes) and return it open.

    Bulk loaders insert first and call :func:`create_indexes` afterwards, which is much faster.
    """
    conn = _connect(Path(path))
    conn.execute("CREATE TABLE _meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO _meta VALUES ('system', ?)", (SALESFORCE,))
    conn.execute(
        "CREATE TABLE _fields (object TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,"
        " position INTEGER NOT NULL, PRIMARY KEY (object, name))"
    )
    for sobject, fields in SALESFORCE_OBJECTS.items():
        columns = []
        for name, sf_type in fields:
            if name == "Id":
                columns.append('"Id" TEXT PRIMARY KEY')
            elif name in _SALESFORCE_USER_FIELDS:
                columns.append(f"\"{name}\" TEXT NOT NULL DEFAULT '{SALESFORCE_INTEGRATION_USER}'")
            elif sf_type == "boolean":
                columns.append(f'"{name}" INTEGER NOT NULL DEFAULT 0')
            else:
                columns.append(f'"{name}" {_sqlite_type(sf_type)}')
        conn.execute(f'CREATE TABLE "{sobject}" ({", ".join(columns)})')
        conn.executemany(
            "INSERT INTO _fields VALUES (?, ?, ?, ?)",
            [(sobject, name, sf_type, i) for i, (name, sf_type) in enumerate(fields)],
        )
    conn.commit()
    return conn


def create_hubspot_store(path: Path) -> sqlite3.Connection:
    """Create an empty HubSpot store (tables without secondary indexes) and return it open."""
    conn = _connect(Path(path))
    conn.execute("CREATE TABLE _meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO _meta VALUES ('system', ?)", (HUBSPOT,))
    for object_type, properties in HUBSPOT_OBJECTS.items():
        columns = [
            "id INTEGER PRIMARY KEY",
            '"createdAt" TEXT NOT NULL',
            '"updatedAt" TEXT NOT NULL',
            "archived INTEGER NOT NULL DEFAULT 0",
            '"archivedAt" TEXT',
        ]
        columns += [f'"{name}" TEXT' for name in properties]
        columns += [f'"{name}" INTEGER' for name in HUBSPOT_ASSOCIATION_COLUMNS.get(object_type, ())]
        conn.execute(f'CREATE TABLE "{object_type}" ({", ".join(columns)})')
    conn.commit()
    return conn


def create_indexes(conn: sqlite3.Connection) -> None:
    """Index what the simulators page and filter on (idempotent)."""
    if store_system(conn) == SALESFORCE:
        statements = [
            'CREATE INDEX IF NOT EXISTS "Account_SystemModstamp" ON "Account" ("SystemModstamp")',
            'CREATE INDEX IF NOT EXISTS "Account_LastModifiedDate" ON "Account" ("LastModifiedDate")',
            'CREATE INDEX IF NOT EXISTS "Contact_SystemModstamp" ON "Contact" ("SystemModstamp")',
            'CREATE INDEX IF NOT EXISTS "Contact_AccountId" ON "Contact" ("AccountId")',
            'CREATE INDEX IF NOT EXISTS "Opportunity_SystemModstamp" ON "Opportunity" ("SystemModstamp")',
            'CREATE INDEX IF NOT EXISTS "Opportunity_AccountId" ON "Opportunity" ("AccountId")',
            'CREATE INDEX IF NOT EXISTS "Case_SystemModstamp" ON "Case" ("SystemModstamp")',
            'CREATE INDEX IF NOT EXISTS "Lead_SystemModstamp" ON "Lead" ("SystemModstamp")',
        ]
    else:
        statements = []
        for object_type in HUBSPOT_OBJECTS:
            statements.append(
                f'CREATE INDEX IF NOT EXISTS "{object_type}_archived_id" ON "{object_type}" (archived, id)'
            )
            statements.append(
                f'CREATE INDEX IF NOT EXISTS "{object_type}_updatedAt" ON "{object_type}" ("updatedAt")'
            )
        statements.append('CREATE INDEX IF NOT EXISTS "deals_company_id" ON "deals" (company_id)')
        statements.append(
            'CREATE INDEX IF NOT EXISTS "contacts_associatedcompanyid" ON "contacts" (associatedcompanyid)'
        )
    for statement in statements:
        conn.execute(statement)
    conn.commit()


def table_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """Columns of a table as they are now (fields added with :func:`add_field` included)."""
    return [str(row[1]) for row in conn.execute(f'PRAGMA table_info("{_checked_table(conn, table)}")')]


def _checked_table(conn: sqlite3.Connection, table: str) -> str:
    # Table names are interpolated into SQL, so only names that exist are accepted.
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? AND name NOT LIKE '\\_%' ESCAPE '\\'",
        (table,),
    ).fetchone()
    if row is None:
        raise KeyError(f"no table {table!r} in this store")
    return str(row[0])


def _checked_columns(conn: sqlite3.Connection, table: str, names: Iterable[str]) -> list[str]:
    known = set(table_columns(conn, table))
    names = list(names)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise KeyError(f"unknown column(s) {unknown} on {table!r}")
    return names


def _key_column(conn: sqlite3.Connection) -> str:
    return "Id" if store_system(conn) == SALESFORCE else "id"


def insert_records(path: Path, table: str, records: Iterable[Mapping[str, object]]) -> int:
    """Insert records (column -> value); columns left out take their default. Returns the count."""
    count = 0
    with closing(open_store(path)) as conn, conn:
        for record in records:
            columns = _checked_columns(conn, table, record)
            quoted = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" for _ in columns)
            conn.execute(f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})', [record[c] for c in columns])
            count += 1
    return count


def update_records(path: Path, table: str, ids: Iterable[str | int], changes: Mapping[str, object]) -> int:
    """Set ``changes`` on the records with these ids (no timestamps moved). Returns rows changed."""
    ids = list(ids)
    if not ids or not changes:
        return 0
    with closing(open_store(path)) as conn, conn:
        columns = _checked_columns(conn, table, changes)
        key = _key_column(conn)
        assignments = ", ".join(f'"{c}" = ?' for c in columns)
        values = [changes[c] for c in columns]
        changed = 0
        for record_id in ids:
            cursor = conn.execute(
                f'UPDATE "{table}" SET {assignments} WHERE "{key}" = ?', [*values, record_id]
            )
            changed += cursor.rowcount
    return changed


def touch_records(
    path: Path,
    table: str,
    ids: Iterable[str | int],
    at: datetime,
    changes: Mapping[str, object] | None = None,
) -> int:
    """Modify records the way a user edit does: apply ``changes`` and move the modified stamps to ``at``.

    Salesforce: ``LastModifiedDate`` (when the object has it) and ``SystemModstamp``; HubSpot:
    ``updatedAt`` and the object's last-modified property. Returns the number of rows changed.
    """
    with closing(open_store(path)) as conn:
        system = store_system(conn)
        columns = set(table_columns(conn, table))
    stamped: dict[str, object] = dict(changes or {})
    if system == SALESFORCE:
        for column in ("LastModifiedDate", "SystemModstamp"):
            if column in columns:
                stamped[column] = sf_datetime(at)
    else:
        stamped["updatedAt"] = hs_datetime(at)
        for modified in hubspot_modified_properties(table) if table in HUBSPOT_MODIFIED_PROPERTY else ():
            if modified in columns:
                stamped[modified] = hs_datetime(at)
    return update_records(path, table, ids, stamped)


def delete_records(path: Path, table: str, ids: Iterable[str | int], at: datetime) -> int:
    """Soft-delete as the systems do: Salesforce ``IsDeleted = 1``, HubSpot ``archived`` + ``archivedAt``."""
    with closing(open_store(path)) as conn:
        system = store_system(conn)
    if system == SALESFORCE:
        return touch_records(path, table, ids, at, {"IsDeleted": 1})
    return touch_records(path, table, ids, at, {"archived": 1, "archivedAt": hs_datetime(at)})


def add_field(
    path: Path,
    table: str,
    name: str,
    field_type: str = "string",
    default: object = None,
) -> None:
    """Add a field (Salesforce) or property (HubSpot) to an object, as an admin would in the CRM.

    ``field_type`` is a Salesforce field type (string, currency, double, int, boolean, date,
    datetime, ...) and decides how the Salesforce simulator renders it; HubSpot properties are text.
    """
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"invalid field name {name!r}")
    with closing(open_store(path)) as conn, conn:
        table = _checked_table(conn, table)
        if name in table_columns(conn, table):
            raise ValueError(f"{table} already has a field {name!r}")
        system = store_system(conn)
        sql_type = _sqlite_type(field_type) if system == SALESFORCE else "TEXT"
        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {sql_type}')
        if default is not None:
            conn.execute(f'UPDATE "{table}" SET "{name}" = ?', (default,))
        if system == SALESFORCE:
            position = conn.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM _fields WHERE object = ?", (table,)
            )
            conn.execute(
                "INSERT INTO _fields VALUES (?, ?, ?, ?)", (table, name, field_type, position.fetchone()[0])
            )


def count_records(path: Path, table: str, *, include_deleted: bool = True) -> int:
    """Number of records in a table; without deleted/archived ones unless ``include_deleted``."""
    with closing(open_store(path, readonly=True)) as conn:
        table = _checked_table(conn, table)
        where = ""
        if not include_deleted:
            where = ' WHERE "IsDeleted" = 0' if store_system(conn) == SALESFORCE else " WHERE archived = 0"
        return int(conn.execute(f'SELECT COUNT(*) FROM "{table}"{where}').fetchone()[0])


def fetch_records(path: Path, table: str, ids: Sequence[str | int] | None = None) -> list[dict[str, object]]:
    """Rows of a table as dicts (all of them, or those with the given ids), in insertion order."""
    with closing(open_store(path, readonly=True)) as conn:
        table = _checked_table(conn, table)
        conn.row_factory = sqlite3.Row
        if ids is None:
            rows = conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
        else:
            key = _key_column(conn)
            rows = []
            for record_id in ids:
                rows.extend(conn.execute(f'SELECT * FROM "{table}" WHERE "{key}" = ?', (record_id,)))
        return [dict(row) for row in rows]
