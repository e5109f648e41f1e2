"""Users' edits of the sandbox's contacts between two nights, in bulk (the nightly benchmark's changed night).

:func:`edit_contacts` changes the job title of a fraction of the live contacts in every CRM of a
generated sandbox, the way a user's edit does: the value changes and the record's modified stamps move
to ``at`` (Salesforce ``LastModifiedDate``/``SystemModstamp``, HubSpot ``updatedAt`` and
``lastmodifieddate``, the other CRMs' modified field, ``_modified`` and the change sequence their delta
links follow). It writes the stores through their documented helpers
(:func:`crm_pipelines_sandbox.simulators.store.touch_records`,
:func:`crm_pipelines_sandbox.simulators.records.update_rows`), which the running simulators serve from
the next request on, so a thousand edits cost no thousand API calls.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Mapping
from contextlib import closing
from datetime import datetime
from typing import Any

from crm_pipelines_sandbox.data import SandboxLayout
from crm_pipelines_sandbox.simulators import records, store
from crm_pipelines_sandbox.systems import sandbox_crm, sandbox_crms

__all__ = ["CONTACT_TITLES", "edit_contacts", "edit_these_contacts", "touch_every_object"]

# The job title field of a contact in each CRM's store (the mapping's ``title`` source). Zendesk keeps it
# in the user's custom fields (``user_fields.job_title``).
CONTACT_TITLES: dict[str, str] = {
    "salesforce": "Title",
    "hubspot": "jobtitle",
    "infor_crm": "Title",
    "sage_crm": "pers_title",
    "sugarcrm": "title",
    "sap_b1": "Position",
    "dynamics": "jobtitle",
    "creatio": "JobTitle",
    "zoho": "Title",
    "pipedrive": "job_title",
    "zendesk": "user_fields",
}
_NEW_TITLES = ("Head of Operations", "Procurement Lead", "Finance Director", "Sales Engineer", "Buyer")


def _pick(keys: list[Any], fraction: float, rng: random.Random) -> list[Any]:
    count = min(len(keys), round(len(keys) * fraction))
    return rng.sample(keys, count) if count else []


def _title(rng: random.Random, old: object) -> str:
    choices = [t for t in _NEW_TITLES if t != old]
    return rng.choice(choices)


def edit_contacts(layout: SandboxLayout, fraction: float, at: datetime, *, seed: int = 1) -> dict[str, int]:
    """Give ``fraction`` of each CRM's live contacts a new job title, edited at ``at``.

    Args:
        layout: The generated sandbox (its stores may be served by running simulators).
        fraction: Share of each system's live contacts to edit (0.01: one in a hundred).
        at: When the users made the edits (the records' new modified time).
        seed: Which contacts (the same seed picks the same ones in the same data).

    Returns:
        Contacts edited, by system.
    """
    rng = random.Random(seed)
    return _edit(layout, at, rng, lambda _, keys: _pick(keys, fraction, rng))


def edit_these_contacts(
    layout: SandboxLayout, ids: Mapping[str, Collection[str]], at: datetime, *, seed: int = 1
) -> dict[str, int]:
    """Give the named live contacts a new job title, edited at ``at``.

    Args:
        layout: The generated sandbox.
        ids: Record ids as text, by system.
        at: When the users made the edits.
        seed: Which new titles.

    Returns:
        Contacts edited, by system.
    """
    return _edit(
        layout,
        at,
        random.Random(seed),
        lambda system, keys: [k for k in keys if str(k) in ids.get(system, ())],
    )


def _edit(
    layout: SandboxLayout,
    at: datetime,
    rng: random.Random,
    choose: Callable[[str, list[Any]], list[Any]],
) -> dict[str, int]:
    edited: dict[str, int] = {}
    for system, path, table, key, live in (
        ("salesforce", layout.salesforce_store, "Contact", "Id", '"IsDeleted" = 0'),
        ("hubspot", layout.hubspot_store, "contacts", "id", "archived = 0"),
    ):
        column = CONTACT_TITLES[system]
        with closing(store.open_store(path, readonly=True)) as conn:
            rows = conn.execute(
                f'SELECT "{key}", "{column}" FROM "{table}" WHERE {live} ORDER BY rowid'
            ).fetchall()
        old = dict(rows)
        chosen = choose(system, [r[0] for r in rows])
        # One touch per new title: each call is one transaction over its records.
        by_title: dict[str, list[str | int]] = {}
        for record_id in chosen:
            by_title.setdefault(_title(rng, old[record_id]), []).append(record_id)
        edited[system] = sum(
            store.touch_records(path, table, ids, at, {column: title}) for title, ids in by_title.items()
        )
    for system in sandbox_crms():
        path = layout.crm_store(system)
        table = sandbox_crm(system).kinds["contact"]
        column = CONTACT_TITLES[system]
        with closing(records.open_store(path)) as conn, conn:
            info = records.store_info(conn)
            key = info.objects[table].key
            rows = conn.execute(
                f'SELECT "{key}", "{column}" FROM "{table}" WHERE _deleted_at IS NULL ORDER BY rowid'
            ).fetchall()
            old = dict(rows)
            count = 0
            for record_id in choose(system, [r[0] for r in rows]):
                value: object
                if system == "zendesk":
                    fields = json.loads(str(old[record_id] or "{}"))
                    fields["job_title"] = _title(rng, fields.get("job_title"))
                    value = json.dumps(fields, separators=(",", ":"))
                else:
                    value = _title(rng, old[record_id])
                count += records.update_rows(conn, info, table, [record_id], at=at, changes={column: value})
            edited[system] = count
    return edited


def touch_every_object(layout: SandboxLayout, at: datetime) -> dict[str, int]:
    """Save one live record of every object in every CRM at ``at``, values unchanged.

    What a working day leaves in each object: its modified stamp moves on, so an incremental read of
    the next night starts from there rather than from the last night's write-back.

    Returns:
        Records touched, by system.
    """
    touched: dict[str, int] = {}
    for system, path, key, live in (
        ("salesforce", layout.salesforce_store, "Id", '"IsDeleted" = 0'),
        ("hubspot", layout.hubspot_store, "id", "archived = 0"),
    ):
        with closing(store.open_store(path, readonly=True)) as conn:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' "
                    "ORDER BY name"
                )
            ]
            last = {
                table: conn.execute(
                    f'SELECT "{key}" FROM "{table}" WHERE {live} ORDER BY rowid DESC LIMIT 1'
                ).fetchone()
                for table in tables
            }
        touched[system] = sum(store.touch_records(path, t, [row[0]], at) for t, row in last.items() if row)
    for system in sandbox_crms():
        with closing(records.open_store(layout.crm_store(system))) as conn, conn:
            info = records.store_info(conn)
            count = 0
            for name, obj in info.objects.items():
                # A field set to its own value: an object without a modified field (SAP Business One
                # stamps UpdateDate and UpdateTime itself) still moves its change stamps.
                field = next(f.name for f in obj.fields if f.name != obj.key)
                row = conn.execute(
                    f'SELECT "{obj.key}", "{field}" FROM "{name}" WHERE _deleted_at IS NULL '
                    "ORDER BY rowid DESC LIMIT 1"
                ).fetchone()
                if row:
                    count += records.update_rows(conn, info, name, [row[0]], at=at, changes={field: row[1]})
            touched[system] = count
    return touched
