"""The eight CRMs beside Salesforce and HubSpot in the sandbox: some of the same companies and people.

Real groups run several CRMs: a subsidiary on Dynamics 365, a sales team on Pipedrive, a legacy Sage
CRM nobody switched off. The generator (:mod:`.data`) hands each company it makes, with its people,
to :class:`OtherCrmSeeder`, which puts about a third of them into one of the other CRMs (a few into
two), typed the way people type: the legal form spelled differently, phones in national format,
countries as codes, the odd typo and duplicate. Each record is a seed (:mod:`.systems`) that the
system's own module turns into its API row, so every store speaks its system's field names, ids
and formats; every record lands in the truth table with the real-world entity it stands for.

The seeder draws from its own random stream: the Salesforce, HubSpot and ERP data a seed produced
before are unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crm_pipelines_sandbox.systems import (
    CASE_PRIORITIES,
    CASE_STATUSES,
    STAGES,
    SandboxCrm,
    SeedAccount,
    SeedCase,
    SeedContact,
    SeedDeal,
    SeedLead,
    StoreWriter,
    sandbox_crm,
    sandbox_crms,
)

if TYPE_CHECKING:
    from crm_pipelines_sandbox.data import _Company, _Country

_Person = tuple[str, str, str, str, str, str]  # entity id, first, last, e-mail, phone area, subscriber
_TruthRow = tuple[str, str, str | None, str | None, bool]
# Share of companies kept in one other CRM, and of those also in a second one.
_IN_OTHER_CRM = 0.35
_IN_SECOND = 0.10
_PEOPLE_SHARE = 0.6  # of a company's people, the share its CRM holds
_DUPLICATE = 0.02
_DELETED = 0.01
_STAGE_WEIGHTS = (0.12, 0.12, 0.14, 0.10, 0.32, 0.20)
_PRODUCTS = (
    "Platform licence",
    "Support renewal",
    "Implementation",
    "Hardware refresh",
    "Training",
    "Expansion",
)
_TITLES = (
    "CEO", "CFO", "Head of Finance", "Purchasing Manager", "Controller", "IT Director", "Office Manager",
    "Sales Manager", "Buyer", "Operations Manager", "Accounts Payable Clerk",
)  # fmt: skip
_PRIVATE_MAIL = ("gmail.com", "outlook.com", "web.de", "yahoo.com", "icloud.com")
# Support cases: the share of a system's companies that raised any, how often each canonical status
# and priority occurs (most cases are done), and what they are about.
_WITH_CASES = 0.3
_CASE_STATUS_WEIGHTS = (0.10, 0.20, 0.10, 0.05, 0.35, 0.20)  # CASE_STATUSES order
_CASE_PRIORITY_WEIGHTS = (0.25, 0.50, 0.20, 0.05)  # CASE_PRIORITIES order
_CASE_TOPICS = (
    ("Invoice shows the wrong amount", "question"),
    ("Cannot log in to the portal", "incident"),
    ("Delivery arrived damaged", "problem"),
    ("Update the billing address", "task"),
    ("Export fails with an error", "incident"),
    ("Licence key not accepted", "problem"),
    ("How do I add a second user?", "question"),
)
_CASE_ORIGINS = ("email", "email", "web", "phone", "chat", "api")
_CASE_RESOLUTIONS = (
    "Explained the setting; the customer confirmed it works.",
    "Credit note issued for the difference.",
    "Replacement shipped.",
    "Fixed in the next release; workaround sent.",
    "Reset the password and unlocked the account.",
)
_LEAD_SOURCES = ("Web", "Trade Show", "Partner", "Advertisement", "Employee Referral", "Seminar")
# The systems whose leads draw from the seeder's one lead stream (those given leads before it had
# streams per system); every other system's leads come from a stream of its own.
_SHARED_LEAD_STREAM = frozenset({"dynamics", "zoho", "sugarcrm"})


class TextStyle(Protocol):
    """How the generator writes values the way people type them (see ``data._Generator``)."""

    def country_text(self, country: _Country, system: str, rnd: Callable[[], float] | None = None) -> str: ...

    def phone_text(
        self, country: _Country, area: str, sub: str, system: str, rnd: Callable[[], float] | None = None
    ) -> str: ...

    def company_name(
        self, company: _Company, upper_share: float, rnd: Callable[[], float] | None = None
    ) -> str: ...

    def street_text(self, street: str, rnd: Callable[[], float] | None = None) -> str: ...

    def mailing_text(
        self, entity_id: str, company: _Company, system: str, copy: int = 0
    ) -> tuple[str | None, str | None, str | None, date | None]: ...

    def typo(self, text: str, rnd: Callable[[], float] | None = None) -> str: ...

    def slug(self, text: str) -> str: ...


@dataclass
class _Pending:
    accounts: list[SeedAccount] = field(default_factory=list)
    contacts: list[SeedContact] = field(default_factory=list)
    deals: list[SeedDeal] = field(default_factory=list)
    cases: list[SeedCase] = field(default_factory=list)
    leads: list[SeedLead] = field(default_factory=list)
    # ref -> (entity id, deleted) for the truth rows once keys are known.
    truth: dict[str, tuple[str, bool]] = field(default_factory=dict)


class OtherCrmSeeder:
    """Puts a share of the generator's companies and people into the other CRMs' stores.

    Args:
        folder: Where the stores go (``<system>.sqlite`` each).
        style: The generator, for typing values the way people do.
        industries: The generator's (label, HubSpot code) industry table.
        seed: Seed of this seeder's own random stream.
        as_of: The last business day of the data.
        window_days: How far back the history goes.
        systems: Which systems (default: every one with a simulator module, see ``sandbox_crms``).
    """

    def __init__(
        self,
        folder: Path,
        *,
        style: TextStyle,
        industries: Sequence[tuple[str, ...]],
        seed: int,
        as_of: date,
        window_days: int,
        systems: Sequence[str] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed * 7919 + 17)
        self.rnd = self.rng.random
        # Cases draw from their own stream: the accounts, contacts and deals are what they were before.
        self.case_rnd = random.Random(seed * 7919 + 41).random
        # Leads draw from their own stream: the accounts, contacts and deals are what they were before.
        self.lead_rnd = random.Random(seed * 7919 + 29).random
        # Systems given leads later draw theirs from a stream of their own each, so adding one leaves
        # every other system's leads (and their truth) as they were.
        self.lead_rnds = {
            name: random.Random(f"{seed}/{name}/lead").random
            for name in (sandbox_crms() if systems is None else systems)
            if name not in _SHARED_LEAD_STREAM
        }
        self.style = style
        self.industries = industries
        self.end = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)
        self.start = self.end - timedelta(days=window_days + 1)
        self.crms: dict[str, SandboxCrm] = {
            name: sandbox_crm(name) for name in (sandbox_crms() if systems is None else systems)
        }
        self.writers = {
            name: StoreWriter(folder / f"{name}.sqlite", crm, seed=seed + i)
            for i, (name, crm) in enumerate(self.crms.items())
        }
        self.pending = {name: _Pending() for name in self.crms}
        self.counts: dict[str, dict[str, int]] = {
            name: {"account": 0, "contact": 0, "deal": 0} for name in self.crms
        }

    # -- what one company contributes -----------------------------------------------------------

    def company(self, company: _Company, people: Sequence[_Person]) -> None:
        """Maybe put the company (and some of its people and deals) into one or two other CRMs."""
        if not self.crms or self.rnd() >= _IN_OTHER_CRM:
            return
        names = list(self.crms)
        chosen = [names[int(self.rnd() * len(names))]]
        if self.rnd() < _IN_SECOND and len(names) > 1:
            second = names[int(self.rnd() * len(names))]
            if second != chosen[0]:
                chosen.append(second)
        for system in chosen:
            self._company_in(system, company, people)

    def _instants(self, not_before: datetime | None = None) -> tuple[datetime, datetime, datetime | None]:
        start = not_before or self.start
        span = max(1, int((self.end - start).total_seconds()) - 1)
        created = start + timedelta(seconds=int(self.rnd() * span))
        rest = max(1, int((self.end - created).total_seconds()) - 1)
        modified = created if self.rnd() < 0.4 else created + timedelta(seconds=int(self.rnd() * rest))
        deleted = None
        if self.rnd() < _DELETED:
            gap = max(1, int((self.end - modified).total_seconds()) - 1)
            deleted = modified + timedelta(seconds=1 + int(self.rnd() * gap))
            if deleted >= self.end:
                deleted = None
        return created, modified, deleted

    def _company_in(self, system: str, company: _Company, people: Sequence[_Person]) -> None:
        rnd, style, pending = self.rnd, self.style, self.pending[system]
        copies = 2 if rnd() < _DUPLICATE else 1
        account_refs: list[str] = []
        for copy in range(copies):
            ref = f"{company.entity_id}@{system}" + (f"#{copy}" if copy else "")
            created, modified, deleted = self._instants()
            website = f"https://www.{company.domain}" if rnd() < 0.6 else company.domain
            pending.accounts.append(
                SeedAccount(
                    ref=ref,
                    name=style.company_name(company, 0.03, rnd),
                    website=website if rnd() < 0.9 else None,
                    phone=style.phone_text(company.country, company.area, company.phone, "crm", rnd)
                    if rnd() < 0.85
                    else None,
                    street=style.street_text(company.street, rnd),
                    city=company.city,
                    postal_code=company.postal,
                    country=style.country_text(company.country, "crm", rnd),
                    industry=self.industries[company.industry][0] if rnd() < 0.8 else None,
                    annual_revenue=f"{company.revenue}.00" if rnd() < 0.6 else None,
                    created=created,
                    modified=modified,
                    deleted=deleted,
                )
            )
            pending.truth[ref] = (company.entity_id, deleted is not None)
            account_refs.append(ref)
        main_ref = account_refs[0]
        main_created = pending.accounts[-copies].created
        for person in people:
            if rnd() >= _PEOPLE_SHARE:
                continue
            entity, first, last, email, area, sub = person
            ref = f"{entity}@{system}"
            created, modified, deleted = self._instants(main_created)
            first_name, last_name = first, last
            r = rnd()
            if r < 0.03:
                first_name = style.typo(first, rnd)
            elif r < 0.05:
                first_name, last_name = first.upper(), last.upper()
            mail: str | None = email
            r = rnd()
            if r < 0.08:
                mail = email.upper() if r < 0.04 else email.capitalize()
            elif r < 0.12:
                private = _PRIVATE_MAIL[int(rnd() * len(_PRIVATE_MAIL))]
                mail = f"{style.slug(first)}.{style.slug(last)}{int(rnd() * 100)}@{private}"
            elif r < 0.15:
                mail = None
            account_ref = main_ref if rnd() < 0.95 else None
            gone = pending.accounts[-copies].deleted
            if "contact" in self.crms[system].contained and gone is not None and account_ref is not None:
                # Contained in the account: removed with it, and not edited after.
                deleted = gone if deleted is None else min(deleted, gone)
                modified, created = min(modified, deleted), min(created, deleted)
            street, city, postal_code, birth_date = style.mailing_text(entity, company, system)
            pending.contacts.append(
                SeedContact(
                    ref=ref,
                    account_ref=account_ref,
                    first_name=first_name,
                    last_name=last_name,
                    email=mail,
                    phone=style.phone_text(company.country, area, sub, "crm", rnd) if rnd() < 0.7 else None,
                    title=_TITLES[int(rnd() * len(_TITLES))] if rnd() < 0.7 else None,
                    country=style.country_text(company.country, "crm", rnd) if rnd() < 0.6 else None,
                    created=created,
                    modified=modified,
                    deleted=deleted,
                    street=street,
                    city=city,
                    postal_code=postal_code,
                    birth_date=birth_date,
                )
            )
            pending.truth[ref] = (entity, deleted is not None)
        for d in range(int(rnd() * 3)):
            ref = f"{company.entity_id}@{system}/deal{d}"
            created, modified, deleted = self._instants(main_created)
            stage = STAGES[_weighted(rnd(), _STAGE_WEIGHTS)]
            close = (created + timedelta(days=int(30 + rnd() * 150))).date()
            pending.deals.append(
                SeedDeal(
                    ref=ref,
                    account_ref=main_ref,
                    name=f"{company.brand} - {_PRODUCTS[int(rnd() * len(_PRODUCTS))]}",
                    amount=f"{int(1_000 + rnd() * 250_000)}.{int(rnd() * 100):02d}",
                    currency=company.country.currency,
                    stage=stage,
                    close_date=close,
                    created=created,
                    modified=modified,
                    deleted=deleted,
                )
            )
            pending.truth[ref] = ("", deleted is not None)
        if "case" in self.crms[system].kinds:
            self._cases_in(system, company, main_ref, main_created)
        if "lead" in self.crms[system].kinds:
            self._leads_in(system, company, people, main_created)

    def _leads_in(
        self, system: str, company: _Company, people: Sequence[_Person], not_before: datetime
    ) -> None:
        """Leads of some of the company's people: those the system also holds as contacts were mostly
        qualified into them (``contact_ref``), the others are new, being worked on or disqualified."""
        rnd, style, pending = self.lead_rnds.get(system, self.lead_rnd), self.style, self.pending[system]
        crm = self.crms[system]
        for entity, first, last, email, area, sub in people:
            contact_ref = f"{entity}@{system}"
            contact = next((c for c in pending.contacts if c.ref == contact_ref), None)
            if contact is None and crm.leads_of_contacts:
                continue  # the system keeps no lead without its person
            if rnd() >= (0.3 if contact is not None else 0.15):
                continue
            span = max(1, int((self.end - not_before).total_seconds()) - 1)
            created = not_before + timedelta(seconds=int(rnd() * span))
            rest = max(1, int((self.end - created).total_seconds()) - 1)
            modified = created + timedelta(seconds=int(rnd() * rest))
            converted = None
            if contact is not None and rnd() < 0.6:
                status, stage = "converted", "sql"
                converted = modified = max(contact.created, created)
            else:
                r = rnd()
                status, stage = (
                    ("new", "lead")
                    if r < 0.35
                    else ("working", "mql")
                    if r < 0.65
                    else ("nurturing", "lead")
                    if r < 0.75
                    else ("unqualified", "lead")
                )
            deleted = modified + timedelta(seconds=1) if rnd() < 0.01 else None
            if converted is not None and crm.converted_leads_deleted:
                deleted = converted  # converting it removed the lead (a Pipedrive lead became a deal)
            ref = f"{entity}@{system}/lead"
            pending.leads.append(
                SeedLead(
                    ref=ref,
                    contact_ref=contact.ref if contact is not None else None,
                    first_name=first,
                    last_name=last.upper() if rnd() < 0.03 else last,
                    email=email if rnd() < 0.9 else None,
                    phone=style.phone_text(company.country, area, sub, "crm", rnd) if rnd() < 0.6 else None,
                    company=style.company_name(company, 0.05, rnd),
                    title=_TITLES[int(rnd() * len(_TITLES))] if rnd() < 0.6 else None,
                    country=style.country_text(company.country, "crm", rnd) if rnd() < 0.7 else None,
                    stage=stage,
                    status=status,
                    lead_source=_LEAD_SOURCES[int(rnd() * len(_LEAD_SOURCES))] if rnd() < 0.8 else None,
                    created=created,
                    modified=modified,
                    converted=converted,
                    deleted=deleted if deleted is not None and deleted < self.end else None,
                )
            )
            pending.truth[ref] = (entity, pending.leads[-1].deleted is not None)

    def _cases_in(self, system: str, company: _Company, account_ref: str, not_before: datetime) -> None:
        """Support cases of a share of the companies: raised by one of its people the system holds,
        statuses spread over the canonical ones; solved and closed ones carry a resolution and when."""
        rnd, pending = self.case_rnd, self.pending[system]
        if rnd() >= _WITH_CASES:
            return
        people = [c.ref for c in pending.contacts if c.account_ref == account_ref and c.deleted is None]
        for n in range(1 + int(rnd() * 3)):
            status = CASE_STATUSES[_weighted(rnd(), _CASE_STATUS_WEIGHTS)]
            subject, case_type = _CASE_TOPICS[int(rnd() * len(_CASE_TOPICS))]
            span = max(1, int((self.end - not_before).total_seconds()) - 1)
            created = not_before + timedelta(seconds=int(rnd() * span))
            resolved = None
            if status in ("solved", "closed"):
                rest = max(1, min(10 * 86400, int((self.end - created).total_seconds()) - 2))
                resolved = created + timedelta(seconds=1 + int(rnd() * rest))
            after = resolved or created
            modified = after + timedelta(
                seconds=int(rnd() * max(1, int((self.end - after).total_seconds()) - 1))
            )
            deleted = modified + timedelta(seconds=1) if rnd() < _DELETED else None
            pending.cases.append(
                SeedCase(
                    ref=f"{account_ref}/case{n}",
                    account_ref=account_ref,
                    contact_ref=people[int(rnd() * len(people))] if people and rnd() < 0.9 else None,
                    subject=subject,
                    description=f"{company.brand}: {subject.lower()}.",
                    status=status,
                    priority=CASE_PRIORITIES[_weighted(rnd(), _CASE_PRIORITY_WEIGHTS)],
                    case_type=case_type,
                    origin=_CASE_ORIGINS[int(rnd() * len(_CASE_ORIGINS))],
                    resolution=_CASE_RESOLUTIONS[int(rnd() * len(_CASE_RESOLUTIONS))] if resolved else None,
                    created=created,
                    modified=modified,
                    resolved=resolved,
                    deleted=deleted if deleted is not None and deleted < self.end else None,
                )
            )

    # -- writing --------------------------------------------------------------------------------

    def flush(self) -> list[_TruthRow]:
        """Write the pending seeds to the stores; returns their truth rows (dataset, key, entity, None, deleted)."""
        rows: list[_TruthRow] = []
        for system, pending in self.pending.items():
            writer, crm = self.writers[system], self.crms[system]
            for kind, items in (
                ("account", pending.accounts),
                ("contact", pending.contacts),
                ("deal", pending.deals),
                ("lead", pending.leads),
                ("case", pending.cases),
            ):
                keys = writer.add(kind, items)  # type: ignore[arg-type]
                self.counts[system][kind] = self.counts[system].get(kind, 0) + len(keys)
                if kind in ("deal", "case") or kind not in crm.kinds:
                    continue  # deals and cases carry no real-world identity to resolve
                dataset = f"{system}.{crm.kinds[kind]}"
                for ref, key in keys.items():
                    entity, deleted = pending.truth[ref]
                    rows.append((dataset, str(key), entity, None, deleted))
            self.pending[system] = _Pending()
        return rows

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def summary(self) -> dict[str, Any]:
        return {system: dict(counts) for system, counts in self.counts.items()}


def _weighted(r: float, weights: Sequence[float]) -> int:
    total = 0.0
    for index, weight in enumerate(weights):
        total += weight
        if r < total:
            return index
    return len(weights) - 1
