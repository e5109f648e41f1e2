"""Dataverse cases (Dynamics 365 Customer Service): the incident table and its case resolutions.

An incident's state (statecode 0 Active, 1 Resolved, 2 Cancelled) and status reason (statuscode 1 In
Progress, 2 On Hold, 3 Waiting for Details, 4 Researching | 5 Problem Solved, 1000 Information
Provided | 6 Cancelled, 2000 Merged); prioritycode 1 High, 2 Normal, 3 Low; caseorigincode 1 Phone,
2 Email, 3 Web; casetypecode 1 Question, 2 Problem, 3 Request. The account is the ``customerid``
lookup (a Customer lookup, read as ``_customerid_value``), the contact ``primarycontactid``.

How a case was resolved is not on the incident: resolving one (the CloseIncident action) creates an
``incidentresolution`` activity (subject: the resolution, ``actualend``: when, ``_incidentid_value``:
the case). The simulator serves both tables; a mapping joins them.
https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/incident
https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/incidentresolution

Importing this module registers both entity sets with the simulator (:data:`.dynamics_schema.ENTITIES`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from crm_pipelines_sandbox.simulators.dynamics_schema import (
    BY_LOGICAL,
    ENTITIES,
    NAMESPACE,
    STANDARD_COLUMNS,
    Entity,
    Lookup,
)
from crm_pipelines_sandbox.simulators.records import TIMESTAMP_FORMATS, FieldDef, ObjectDef
from crm_pipelines_sandbox.systems import SeedCase

INCIDENTS = ObjectDef(
    name="incidents",
    key="incidentid",
    fields=(
        FieldDef("incidentid"),
        FieldDef("title", required=True),
        FieldDef("ticketnumber"),
        FieldDef("description"),
        FieldDef("statecode", "integer"),
        FieldDef("statuscode", "integer"),
        FieldDef("prioritycode", "integer"),
        FieldDef("caseorigincode", "integer"),
        FieldDef("casetypecode", "integer"),
        FieldDef("customerid"),
        FieldDef("primarycontactid"),
        FieldDef("createdon", "datetime"),
        FieldDef("modifiedon", "datetime"),
        FieldDef("versionnumber", "integer"),
    ),
    created_field="createdon",
    modified_field="modifiedon",
)
INCIDENT_RESOLUTIONS = ObjectDef(
    name="incidentresolutions",
    key="activityid",
    fields=(
        FieldDef("activityid"),
        FieldDef("subject", required=True),
        FieldDef("description"),
        FieldDef("incidentid"),
        FieldDef("actualend", "datetime"),
        FieldDef("statecode", "integer"),
        FieldDef("statuscode", "integer"),
        FieldDef("createdon", "datetime"),
        FieldDef("modifiedon", "datetime"),
        FieldDef("versionnumber", "integer"),
    ),
    created_field="createdon",
    modified_field="modifiedon",
)
OBJECTS = (INCIDENTS, INCIDENT_RESOLUTIONS)

STATES = {0: "Active", 1: "Resolved", 2: "Cancelled"}
STATUS_REASONS = {
    1: ("In Progress", 0),
    2: ("On Hold", 0),
    3: ("Waiting for Details", 0),
    4: ("Researching", 0),
    5: ("Problem Solved", 1),
    1000: ("Information Provided", 1),
    6: ("Cancelled", 2),
    2000: ("Merged", 2),
}
PRIORITIES = {1: "High", 2: "Normal", 3: "Low"}
ORIGINS = {1: "Phone", 2: "Email", 3: "Web", 2483: "Facebook", 3986: "Twitter", 700610000: "IoT"}
CASE_TYPES = {1: "Question", 2: "Problem", 3: "Request"}

# Canonical case status, priority, channel and type -> the incident's choice values.
STATUS_FROM_SEED = {"new": 1, "open": 4, "pending": 3, "on_hold": 2, "solved": 5, "closed": 6}
PRIORITY_FROM_SEED = {"urgent": 1, "high": 1, "normal": 2, "low": 3}
ORIGIN_FROM_SEED = {"phone": 1, "email": 2, "web": 3, "chat": 3, "api": 3}
TYPE_FROM_SEED = {"question": 1, "incident": 2, "problem": 2, "task": 3}

ENTITIES["incidents"] = Entity(
    "incidents",
    "incident",
    alternate_keys=("ticketnumber",),
    required=("title",),
    lookups={
        "customerid": Lookup("accounts", "account", "customerid_account", "Customer"),
        "primarycontactid": Lookup("contacts", "contact", "primarycontactid"),
    },
    picklists={
        "statecode": STATES,
        "statuscode": {code: label for code, (label, _) in STATUS_REASONS.items()},
        "prioritycode": PRIORITIES,
        "caseorigincode": ORIGINS,
        "casetypecode": CASE_TYPES,
    },
)
ENTITIES["incidentresolutions"] = Entity(
    "incidentresolutions",
    "incidentresolution",
    alternate_keys=(),
    required=("subject",),
    lookups={"incidentid": Lookup("incidents", "incident", "incidentid")},
    picklists={
        "statecode": {0: "Open", 1: "Completed", 2: "Canceled"},
        "statuscode": {1: "Open", 2: "Closed"},
    },
)
for _entity in ("incidents", "incidentresolutions"):
    BY_LOGICAL[ENTITIES[_entity].logical] = ENTITIES[_entity]
STANDARD_COLUMNS.update({obj.name: frozenset(obj.field_names) for obj in OBJECTS})


def ticket_number(key: str) -> str:
    """Dataverse's auto-number, ``CAS-01234-X7Y8Z9``, fixed for a case id."""
    digits = uuid.UUID(key).int
    return f"CAS-{digits % 100_000:05d}-{uuid.UUID(key).hex[-6:].upper()}"


def incident_row(seed: SeedCase, key: str, refs: Mapping[str, Any]) -> dict[str, Any]:
    """The incident row of a seed case."""
    status = STATUS_FROM_SEED[seed.status]
    return {
        "incidentid": key,
        "title": seed.subject,
        "ticketnumber": ticket_number(key),
        "description": seed.description,
        "statecode": STATUS_REASONS[status][1],
        "statuscode": status,
        "prioritycode": PRIORITY_FROM_SEED.get(seed.priority or ""),
        "caseorigincode": ORIGIN_FROM_SEED.get(seed.origin or ""),
        "casetypecode": TYPE_FROM_SEED.get(seed.case_type or ""),
        "customerid": refs.get(seed.account_ref) if seed.account_ref else None,
        "primarycontactid": refs.get(seed.contact_ref) if seed.contact_ref else None,
    }


def resolution_row(seed: SeedCase, key: str) -> dict[str, Any] | None:
    """The case resolution activity a resolved seed case has (None while it is open, and for a cancelled
    one: cancelling sets the state, it records no resolution)."""
    if (
        seed.resolved is None
        or seed.resolution is None
        or STATUS_REASONS[STATUS_FROM_SEED[seed.status]][1] != 1
    ):
        return None
    return {
        "activityid": str(uuid.uuid5(NAMESPACE, f"incidentresolution:{key}")),
        "subject": seed.resolution[:200],
        "incidentid": key,
        "actualend": TIMESTAMP_FORMATS["iso_z"](seed.resolved),
        "statecode": 1,
        "statuscode": 2,
    }
