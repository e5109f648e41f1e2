"""The sandbox side of each CRM declared after Salesforce and HubSpot: one contract, one module each.

Every system ``X`` with a declaration ``crm_pipelines/connectors/systems/X.yaml`` has a simulator
module ``sandbox/crm_pipelines_sandbox/simulators/X.py`` that exposes ``SANDBOX``, an instance of a
:class:`SandboxCrm` subclass. It says:

* which objects the system has and how its store is laid out (:mod:`.simulators.records`);
* how a seed record (what a user typed into some CRM: a company, a person, a deal) becomes a row of
  that system, field names, formats and ids included;
* how to start its simulator with fresh credentials, and the environment variables that point the
  pipelines at it;
* a write-back case: records the system accepts and records it rejects, with the error it gives.

The data generator (:mod:`.data`) and the tests build stores through :func:`build_store`, so the
data a simulator serves is always what the system's own conventions say.
"""

from __future__ import annotations

import importlib
import importlib.util
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines_sandbox.simulators.base import SimulatorServer
from crm_pipelines_sandbox.simulators.records import ObjectDef, Stamped, create_store, insert_rows, store_info

Kind = Literal["account", "contact", "deal", "lead", "case"]
# The systems declared after Salesforce and HubSpot, each with a simulator module exposing SANDBOX.
OTHER_CRMS = ("dynamics", "zoho", "pipedrive", "sugarcrm", "creatio", "infor_crm", "sage_crm", "sap_b1")
# Service desks: the same contract, kinds account, contact and case (no deals); started and seeded
# with the other CRMs.
SERVICE_DESKS = ("zendesk",)
# The canonical stages every system's own stage values map onto (mappings.yaml value maps).
STAGES = ("prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost")


@dataclass(frozen=True)
class SeedAccount:
    """A company as somebody typed it into a CRM (values may be dirty on purpose)."""

    ref: str  # the generator's own handle; the truth table maps it to the real-world entity
    name: str | None
    website: str | None
    phone: str | None
    street: str | None
    city: str | None
    postal_code: str | None
    country: str | None  # as typed: "Germany", "DE", "Deutschland" ...
    industry: str | None
    annual_revenue: str | None  # decimal text, e.g. "1250000.00"
    created: datetime
    modified: datetime
    deleted: datetime | None = None


@dataclass(frozen=True)
class SeedContact:
    """A person as somebody typed them into a CRM."""

    ref: str
    account_ref: str | None
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    title: str | None
    country: str | None
    created: datetime
    modified: datetime
    deleted: datetime | None = None
    # Mailing address and birth date, as typed (each may be missing); systems without them drop them.
    street: str | None = None
    city: str | None = None
    postal_code: str | None = None
    birth_date: date | None = None


@dataclass(frozen=True)
class SeedDeal:
    """An opportunity / deal. ``stage`` is one of :data:`STAGES`; the system renders its own value."""

    ref: str
    account_ref: str | None
    name: str | None
    amount: str | None  # decimal text
    currency: str | None  # ISO 4217 as typed
    stage: str
    close_date: date | None
    created: datetime
    modified: datetime
    deleted: datetime | None = None


# The canonical lead stages and statuses, and case statuses and priorities, seeds carry; each system
# renders its own values (mappings.yaml's value maps read them back).
LEAD_STAGES = ("lead", "mql", "sql")
LEAD_STATUSES = ("new", "working", "nurturing", "qualified", "unqualified", "converted")
CASE_STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")
CASE_PRIORITIES = ("low", "normal", "high", "urgent")


@dataclass(frozen=True)
class SeedLead:
    """A marketing or sales lead as captured in a system (a HubSpot contact in a lead stage, a Lead).

    ``contact_ref`` names the seed contact this lead is the same person as (for the truth table and for
    systems that keep leads as contacts); ``stage`` is one of :data:`LEAD_STAGES` and ``status`` one of
    :data:`LEAD_STATUSES`.
    """

    ref: str
    contact_ref: str | None
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    company: str | None
    title: str | None
    country: str | None
    stage: str
    status: str
    lead_source: str | None
    created: datetime
    modified: datetime
    converted: datetime | None = None
    deleted: datetime | None = None


@dataclass(frozen=True)
class SeedCase:
    """A support case (a CRM case, a service-desk ticket). ``status`` is one of :data:`CASE_STATUSES`,
    ``priority`` one of :data:`CASE_PRIORITIES`; ``resolved`` is set once the case is solved or closed."""

    ref: str
    account_ref: str | None
    contact_ref: str | None
    subject: str | None
    description: str | None
    status: str
    priority: str | None
    case_type: str | None  # question, incident, problem, task
    origin: str | None  # email, web, phone, chat, api
    resolution: str | None
    created: datetime
    modified: datetime
    resolved: datetime | None = None
    deleted: datetime | None = None


@dataclass(frozen=True)
class Seeds:
    accounts: Sequence[SeedAccount] = ()
    contacts: Sequence[SeedContact] = ()
    deals: Sequence[SeedDeal] = ()
    leads: Sequence[SeedLead] = ()
    cases: Sequence[SeedCase] = ()


@dataclass(frozen=True)
class WriteCase:
    """A write-back batch for the tests: what the system accepts and what it rejects, and why.

    Attributes:
        object_name: Object written (declared with ``upsert`` in the system YAML).
        external_id_field: The field records are matched on.
        accepted: Records the system takes (new ones and, after a first upsert, updates).
        rejected: Records the system refuses, each for a reason it reports per record.
        rejected_code: The error code (or category) the engine reports for each rejected record.
    """

    object_name: str
    external_id_field: str
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    rejected_code: str


@dataclass(frozen=True)
class UpdateCase:
    """Updates by record id for the tests: existing records changed, and an id the system does not know.

    Attributes:
        object_name: Object written (declared with ``update`` in the system YAML).
        changed: Existing records, each with its primary key (by its API path) and the fields set.
        field: A field the changes set, by its declared name (its column in the extract).
        expected: That field's value in the next read, by record id, as the API returns it.
        unknown: A record whose id the system does not know: rejected, never created.
        unknown_code: The error code the engine reports for it.
    """

    object_name: str
    changed: list[dict[str, Any]]
    field: str
    expected: dict[str, str]
    unknown: dict[str, Any]
    unknown_code: str


@dataclass
class Started:
    """A running simulator and the environment variables that point the pipelines at it."""

    simulator: SimulatorServer
    env: dict[str, str] = field(default_factory=dict)


class SandboxCrm(ABC):
    """What the sandbox knows about one system. Subclass once per system module (``SANDBOX = ...``)."""

    system: str  # the YAML's stem, e.g. "dynamics"
    timestamp_format: str  # a key of records.TIMESTAMP_FORMATS
    objects: tuple[ObjectDef, ...]
    # Canonical kind -> object name, e.g. {"account": "accounts", "contact": "contacts", "deal": "opportunities"};
    # "lead" and "case" only for the systems that have them (seeds of a kind a system lacks are skipped).
    kinds: Mapping[str, str]
    # Canonical stage -> the system's own value (what a deal's stage field holds).
    stage_values: Mapping[str, str]
    # Kinds that live inside their account (SAP B1 contact persons): deleted with it, never after.
    contained: frozenset[str] = frozenset()
    # How the system keeps leads, for the seeder: every lead is one of the people it holds as contacts
    # (a Pipedrive lead is linked to a person, who carries the name and e-mail), and converting a lead
    # removes it (Pipedrive deletes a lead it converts into a deal).
    leads_of_contacts: bool = False
    converted_leads_deleted: bool = False
    # The webhook sender (crm_pipelines/webhooks/senders.py) whose webhooks the simulator sends, if any:
    # with a receiver running, the sandbox starts it through start_with_webhooks.
    webhook_sender: str | None = None

    @abstractmethod
    def new_key(self, kind: Kind, rng: random.Random) -> Any:
        """A fresh primary key of the system's shape (GUID, 19-digit id, CardCode ...)."""

    @abstractmethod
    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        """The API row for a seed: field name -> value. ``refs`` maps seed refs to keys already assigned
        (a contact's account). Leave the created/modified fields out: the store writes them."""

    @abstractmethod
    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        """Start the simulator over ``store`` with fresh credentials; return it and its env vars."""

    def connection(self, started: Started) -> ConnectionSettings:
        """Connection settings for the engine: what the exported variables say, read the way the
        system's declaration names them (as ``definitions.py`` wires them for a real system)."""
        from crm_pipelines.connectors.spec import load_system

        return ConnectionSettings(**load_system(name=self.system).connection_fields(started.env))

    @abstractmethod
    def write_case(self, store: Path) -> WriteCase:
        """A write-back batch that this system partly accepts and partly rejects."""

    def companions(self, kind: Kind, seed: Any, key: Any) -> list[tuple[str, Stamped]]:
        """Rows of other objects a seed brings along, as (object name, row): a resolved Dynamics case's
        resolution activity. None by default."""
        return []

    def start_with_webhooks(self, store: Path, *, url: str, secret: str) -> Started:
        """Start the simulator sending its webhooks to ``url``, signed with ``secret``."""
        raise NotImplementedError(f"{self.system}: the simulator sends no webhooks")

    def update_case(self, store: Path) -> UpdateCase:
        """Updates of existing records by their id, and one id the system does not know."""
        raise NotImplementedError(f"{self.system}: the sandbox declares no update case yet")


def sandbox_crms() -> list[str]:
    """The other CRMs and the service desks that have a simulator module (:data:`OTHER_CRMS`, then
    :data:`SERVICE_DESKS`)."""
    return [
        name
        for name in (*OTHER_CRMS, *SERVICE_DESKS)
        if importlib.util.find_spec(f"crm_pipelines_sandbox.simulators.{name}")
    ]


def sandbox_crm(system: str) -> SandboxCrm:
    """The sandbox contract of a system (imports ``crm_pipelines_sandbox.simulators.<system>``)."""
    module = importlib.import_module(f"crm_pipelines_sandbox.simulators.{system}")
    crm = getattr(module, "SANDBOX", None)
    if not isinstance(crm, SandboxCrm):
        raise TypeError(f"crm_pipelines_sandbox.simulators.{system} has no SANDBOX (a SandboxCrm)")
    return crm


class StoreWriter:
    """Creates a system's store and inserts seeds in batches as the system's rows (keys assigned here).

    Seeds of one kind may reference seeds of another written earlier (a contact's account): the
    writer remembers every key it handed out.

    Args:
        path: The store file to create (replaced when it exists).
        crm: The system.
        seed: Seed of the key generator.
    """

    def __init__(self, path: Path, crm: SandboxCrm, *, seed: int = 7) -> None:
        Path(path).unlink(missing_ok=True)
        self.crm = crm
        self._rng = random.Random(seed)
        # Kinds added after the first three draw keys from streams of their own, so adding them to a
        # store moves no account, contact or deal key.
        self._kind_rngs = {kind: random.Random(f"{seed}/{kind}") for kind in ("lead", "case")}
        self._conn = create_store(
            path, system=crm.system, objects=crm.objects, timestamp_format=crm.timestamp_format
        )
        self._info = store_info(self._conn)
        self.refs: dict[str, Any] = {}

    def add(
        self, kind: Kind, items: Sequence[SeedAccount | SeedContact | SeedDeal | SeedLead | SeedCase]
    ) -> dict[str, Any]:
        """Insert seeds of one kind; returns seed ref -> key."""
        if kind not in self.crm.kinds or not items:
            return {}
        keys: dict[str, Any] = {}
        rows: list[Stamped] = []
        companions: dict[str, list[Stamped]] = {}
        for item in items:
            key = self.crm.new_key(kind, self._kind_rngs.get(kind, self._rng))
            keys[item.ref] = key
            self.refs[item.ref] = key
            rows.append(
                Stamped(self.crm.row(kind, item, key, self.refs), item.created, item.modified, item.deleted)
            )
            for object_name, companion in self.crm.companions(kind, item, key):
                companions.setdefault(object_name, []).append(companion)
        with self._conn:
            insert_rows(self._conn, self._info, self.crm.kinds[kind], rows)
            for object_name, extra in companions.items():
                insert_rows(self._conn, self._info, object_name, extra)
        return keys

    def close(self) -> None:
        self._conn.close()


def build_store(path: Path, crm: SandboxCrm, seeds: Seeds, *, seed: int = 7) -> dict[str, dict[str, Any]]:
    """Create ``path`` as the system's store and insert the seeds as the system's rows.

    Returns:
        Kind -> seed ref -> the key the record got (the truth table needs it).
    """
    writer = StoreWriter(path, crm, seed=seed)
    try:
        return {
            "account": writer.add("account", seeds.accounts),
            "contact": writer.add("contact", seeds.contacts),
            "deal": writer.add("deal", seeds.deals),
            "lead": writer.add("lead", seeds.leads),
            "case": writer.add("case", seeds.cases),
        }
    finally:
        writer.close()


# --- a small deterministic sample for tests --------------------------------------------------------

_COMPANIES = (
    (
        "Nordwind Logistik GmbH",
        "nordwind-logistik.de",
        "+49 40 3012 4455",
        "Hafenstraße 12",
        "Hamburg",
        "20457",
        "Germany",
    ),
    (
        "Atelier Lumière SARL",
        "atelier-lumiere.fr",
        "+33 1 42 68 53 00",
        "12 rue de Rivoli",
        "Paris",
        "75004",
        "France",
    ),
    (
        "Brightwater Analytics Ltd",
        "brightwater.co.uk",
        "+44 20 7946 0321",
        "1 Canada Square",
        "London",
        "E14 5AB",
        "United Kingdom",
    ),
    ("Casa Verde S.L.", "casaverde.es", "+34 913 12 45 67", "Calle de Alcalá 45", "Madrid", "28014", "Spain"),
    (
        "Molen & Zonen B.V.",
        "molenzonen.nl",
        "+31 20 555 0199",
        "Damrak 70",
        "Amsterdam",
        "1012 LM",
        "Netherlands",
    ),
    (
        "Alpenblick AG",
        "alpenblick.ch",
        "+41 44 668 18 00",
        "Bahnhofstrasse 21",
        "Zürich",
        "8001",
        "Switzerland",
    ),
    (
        "Lakeshore Tools Inc.",
        "lakeshoretools.com",
        "+1 312 555 0147",
        "233 S Wacker Dr",
        "Chicago",
        "60606",
        "United States",
    ),
    ("Vento Italia S.p.A.", "ventoitalia.it", "+39 02 8901 2345", "Via Dante 7", "Milano", "20121", "Italy"),
)
_PEOPLE = (
    ("Anna", "Schmidt", "Head of Finance"),
    ("Luc", "Moreau", "CFO"),
    ("Emily", "Clarke", "Procurement Manager"),
    ("Javier", "Ruiz", "Controller"),
    ("Sanne", "de Vries", "Office Manager"),
    ("Urs", "Keller", "CEO"),
    ("Grace", "Miller", "Buyer"),
    ("Giulia", "Rossi", "Accounts Payable"),
)
_INDUSTRIES = ("Manufacturing", "Technology", "Retail", "Finance", "Transportation")
_CURRENCIES = {
    "Germany": "EUR",
    "France": "EUR",
    "Spain": "EUR",
    "Netherlands": "EUR",
    "Italy": "EUR",
    "United Kingdom": "GBP",
    "Switzerland": "CHF",
    "United States": "USD",
}


def sample_seeds(*, accounts: int = 24, as_of: date, seed: int = 1) -> Seeds:
    """A deterministic sample: ``accounts`` companies, two people and one or two deals each.

    Instants spread over the 30 days before ``as_of``'s end; about 5% of each kind is already
    deleted. Tests use it to build a small store for any system.
    """
    rng = random.Random(seed)
    end = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)
    start = end - timedelta(days=30)

    def instants() -> tuple[datetime, datetime, datetime | None]:
        created = start + timedelta(seconds=rng.randrange(int((end - start).total_seconds()) - 7200))
        modified = created + timedelta(
            seconds=rng.randrange(max(1, int((end - created).total_seconds()) - 3600))
        )
        deleted = modified + timedelta(seconds=rng.randrange(1, 3600)) if rng.random() < 0.05 else None
        return created, modified, deleted

    out_accounts: list[SeedAccount] = []
    out_contacts: list[SeedContact] = []
    out_deals: list[SeedDeal] = []
    for i in range(accounts):
        name, domain, phone, street, city, postal, country = _COMPANIES[i % len(_COMPANIES)]
        suffix = "" if i < len(_COMPANIES) else f" {i // len(_COMPANIES) + 1}"
        created, modified, deleted = instants()
        ref = f"A{i:05d}"
        out_accounts.append(
            SeedAccount(
                ref=ref,
                name=name + suffix,
                website=f"https://www.{domain}" if not suffix else f"https://www.{i}.{domain}",
                phone=phone,
                street=street,
                city=city,
                postal_code=postal,
                country=country,
                industry=_INDUSTRIES[i % len(_INDUSTRIES)],
                annual_revenue=f"{rng.randrange(100, 90_000) * 1000}.00",
                created=created,
                modified=modified,
                deleted=deleted,
            )
        )
        for p in range(2):
            first, last, title = _PEOPLE[(i + p) % len(_PEOPLE)]
            c_created, c_modified, c_deleted = instants()
            out_contacts.append(
                SeedContact(
                    ref=f"P{i:05d}{p}",
                    account_ref=ref,
                    first_name=first,
                    last_name=last,
                    email=f"{first.lower()}.{last.lower().replace(' ', '')}{i}@{domain}",
                    phone=phone,
                    title=title,
                    country=country,
                    created=c_created,
                    modified=c_modified,
                    deleted=c_deleted,
                )
            )
        for d in range(1 + i % 2):
            d_created, d_modified, d_deleted = instants()
            out_deals.append(
                SeedDeal(
                    ref=f"D{i:05d}{d}",
                    account_ref=ref,
                    name=f"{name}{suffix} - {'Renewal' if d else 'New business'}",
                    amount=f"{rng.randrange(5, 500) * 100}.00",
                    currency=_CURRENCIES[country],
                    stage=STAGES[(i + d) % len(STAGES)],
                    close_date=(end + timedelta(days=rng.randrange(-60, 90))).date(),
                    created=d_created,
                    modified=d_modified,
                    deleted=d_deleted,
                )
            )
    cases = sample_cases(out_accounts, out_contacts, end=end, seed=seed)
    leads = sample_leads(out_accounts, out_contacts, end=end, seed=seed)
    return Seeds(out_accounts, out_contacts, out_deals, leads=leads, cases=cases)


# Each canonical lead status and the funnel stage a lead with it has reached.
_LEAD_STAGE_OF = {
    "new": "lead",
    "working": "mql",
    "nurturing": "lead",
    "qualified": "sql",
    "converted": "sql",
    "unqualified": "lead",
}
_LEAD_SOURCES = ("Web", "Trade Show", "Partner", "Advertisement")


def sample_leads(
    accounts: Sequence[SeedAccount], contacts: Sequence[SeedContact], *, end: datetime, seed: int = 1
) -> list[SeedLead]:
    """Leads of every other live contact (the same person, ``contact_ref``) and of a few people no
    system holds yet, over the 20 days before ``end``.

    Statuses cycle through :data:`LEAD_STATUSES` so each appears; converted leads carry the time.
    Drawn from its own random stream: the rest of a sample is the same with or without leads.
    """
    rng = random.Random(seed * 7_919 + 11)
    companies = {a.ref: a.name for a in accounts}
    people = [c for c in contacts if c.deleted is None][::2]
    out: list[SeedLead] = []
    for n, person in enumerate([*people, *people[:3]]):
        known = n < len(people)
        status = LEAD_STATUSES[n % len(LEAD_STATUSES)]
        created = end - timedelta(days=20) + timedelta(seconds=rng.randrange(14 * 86400))
        modified = created + timedelta(seconds=rng.randrange(1, 3 * 86400))
        first, last = (person.first_name, person.last_name) if known else ("Noor", f"Prospect{n}")
        out.append(
            SeedLead(
                ref=f"L{n:05d}",
                contact_ref=person.ref if known else None,
                first_name=first,
                last_name=last,
                email=person.email if known else f"noor.prospect{n}@example.org",
                phone=person.phone,
                company=companies.get(person.account_ref or ""),
                title=person.title,
                country=person.country,
                stage=_LEAD_STAGE_OF[status],
                status=status,
                lead_source=_LEAD_SOURCES[n % len(_LEAD_SOURCES)],
                created=created,
                modified=modified,
                converted=modified if status == "converted" else None,
            )
        )
    return out


_CASE_SUBJECTS = (
    "Invoice shows the wrong VAT rate",
    "Cannot log in to the customer portal",
    "Delivery arrived damaged",
    "Question about the maintenance contract",
    "Export to CSV fails with an error",
    "Request for a second licence key",
)
_CASE_TYPES = ("question", "incident", "problem", "task")
_CASE_ORIGINS = ("email", "web", "phone", "chat", "api")


def sample_cases(
    accounts: Sequence[SeedAccount], contacts: Sequence[SeedContact], *, end: datetime, seed: int = 1
) -> list[SeedCase]:
    """Support cases of every third live account, raised by one of its people, over the 20 days before ``end``.

    Statuses and priorities cycle through :data:`CASE_STATUSES` and :data:`CASE_PRIORITIES` so each
    appears; solved and closed cases carry a resolution and a resolved time. Drawn from its own random
    stream: the accounts, contacts and deals of a sample are the same with or without cases.
    """
    rng = random.Random(seed * 7_907 + 3)
    people: dict[str, list[SeedContact]] = {}
    for contact in contacts:
        if contact.account_ref is not None and contact.deleted is None:
            people.setdefault(contact.account_ref, []).append(contact)
    out: list[SeedCase] = []
    live = [a for a in accounts if a.deleted is None]
    for i, account in enumerate(live[::3]):
        for c in range(1 + i % 2):
            n = len(out)
            status = CASE_STATUSES[n % len(CASE_STATUSES)]
            created = end - timedelta(days=20) + timedelta(seconds=rng.randrange(14 * 86400))
            resolved = (
                created + timedelta(seconds=rng.randrange(3600, 3 * 86400))
                if status in ("solved", "closed")
                else None
            )
            modified = (resolved or created) + timedelta(seconds=rng.randrange(1, 3600))
            person = people.get(account.ref)
            out.append(
                SeedCase(
                    ref=f"{account.ref}/case{c}",
                    account_ref=account.ref,
                    contact_ref=person[c % len(person)].ref if person else None,
                    subject=_CASE_SUBJECTS[n % len(_CASE_SUBJECTS)],
                    description=f"Reported for {account.name}: please look into it.",
                    status=status,
                    priority=CASE_PRIORITIES[n % len(CASE_PRIORITIES)],
                    case_type=_CASE_TYPES[n % len(_CASE_TYPES)],
                    origin=_CASE_ORIGINS[n % len(_CASE_ORIGINS)],
                    resolution="Explained the setting and confirmed with the customer." if resolved else None,
                    created=created,
                    modified=modified,
                    resolved=resolved,
                )
            )
    return out
