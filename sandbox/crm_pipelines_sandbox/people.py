"""CRM-shaped people with ground truth, for measuring identity resolution (``bench/identity.py``).

True people work at true companies; each person is copied into one to three systems (``salesforce``,
``hubspot``, ``erp``), sometimes twice into one, the way those systems record them:

- nicknames (Kate for Katherine) from the ``nicknames`` package: the Old Dominion University
  name/nickname table (carltonnorthern/nicknames, Apache-2.0), not a hand-typed list;
- initials ("T." Campbell), one-letter typos, transliterations (Müller/Mueller/Muller, ß/ss);
- ``+tag`` e-mail addresses and private (free-mail) addresses instead of the work address;
- phones in E.164, spaced international, national format without a country, or a digit too many;
- missing countries;
- namesakes at the same company (different people, same name, same account);
- family members at the family's company, sharing its address and landline (same last name,
  different first name);
- same-named companies in different towns (different companies).

Contacts carry the canonical contact columns plus the mailing address and birth date that CRMs
hold for people (``mailing_street``, ``mailing_city``, ``mailing_postal_code``, ``mailing_country``,
``birth_date``), and ``person_id``, the truth. Accounts carry the canonical account columns and
``company_id``. Same seed and size give the same tables: one ``random.Random(seed)`` consumed in a
fixed order, no wall clock.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

import pyarrow as pa
from nicknames import NickNamer

from crm_pipelines import canonical

SOURCES = ("salesforce", "hubspot", "erp")
FREE_MAIL = ("gmail.com", "gmx.de", "web.de", "outlook.com", "yahoo.com", "icloud.com", "hotmail.co.uk")
# Country -> (calling code, towns as (city, postal code prefix, area code)).
_COUNTRIES: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "DE": (
        "49",
        (
            ("Berlin", "10", "30"),
            ("München", "80", "89"),
            ("Köln", "50", "221"),
            ("Hamburg", "20", "40"),
            ("Düsseldorf", "40", "211"),
            ("Stuttgart", "70", "711"),
            ("Leipzig", "04", "341"),
            ("Nürnberg", "90", "911"),
        ),
    ),
    "AT": ("43", (("Wien", "10", "1"), ("Graz", "80", "316"), ("Linz", "40", "732"))),
    "CH": ("41", (("Zürich", "80", "44"), ("Basel", "40", "61"), ("Bern", "30", "31"))),
    "GB": ("44", (("London", "EC", "20"), ("Manchester", "M", "161"), ("Leeds", "LS", "113"))),
    "US": ("1", (("Boston", "02", "617"), ("Chicago", "60", "312"), ("Austin", "78", "512"))),
    "FR": ("33", (("Paris", "75", "1"), ("Lyon", "69", "4"), ("Lille", "59", "3"))),
}
# Digits of a national significant number (area code and subscriber, no trunk prefix).
_NUMBER_LENGTH = {"DE": 10, "AT": 10, "CH": 9, "GB": 10, "US": 10, "FR": 9}
_COUNTRY_WEIGHTS = {"DE": 5, "AT": 1, "CH": 1, "GB": 2, "US": 2, "FR": 1}
# German given names the nickname table lacks, with the letters transliteration changes.
_UMLAUT_FIRST = (
    "Jürgen",
    "Jörg",
    "Björn",
    "Sören",
    "Günter",
    "Käthe",
    "Jörn",
    "Bärbel",
    "Lütfi",
    "Hans-Jürgen",
)
_SURNAMES = (
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Campbell",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
    "Jackson",
    "Clarke",
    "Okafor",
    "Nakamura",
    "Kowalski",
    "Novak",
    "Rossi",
    "Russo",
    "Moreau",
    "Laurent",
    "Dubois",
    "Bernard",
    "Lefebvre",
    "Garcia",
    "Martinez",
    "Lopez",
    "Fischer",
    "Meyer",
    "Wagner",
    "Becker",
    "Hoffmann",
    "Schulz",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Werner",
    "Krause",
    "Lehmann",
    "Schmitt",
    "Schmid",
    "Huber",
    "Bauer",
    "Gruber",
    "Müller",
    "Schröder",
    "Schäfer",
    "Köhler",
    "Weiß",
    "Groß",
    "Strauß",
    "Jäger",
    "Krüger",
    "Böhm",
    "Möller",
    "Kühn",
    "Günther",
    "Lüdtke",
    "Schütz",
    "Völker",
    "Fuß",
    "Bößler",
    "Dürr",
    "Hübner",
)
_SYLLABLES_A = (
    "Ber",
    "Kal",
    "Mor",
    "Ste",
    "Wal",
    "Han",
    "Lin",
    "Ros",
    "Dor",
    "Fel",
    "Gar",
    "Hel",
    "Kor",
    "Mar",
    "Nor",
    "Ost",
    "Pal",
    "Rei",
    "Sel",
    "Tan",
    "Ul",
    "Vor",
    "Wen",
    "Zel",
    "Bran",
    "Cor",
    "Ed",
    "Fal",
)
_SYLLABLES_B = (
    "mann",
    "berg",
    "stein",
    "ford",
    "ton",
    "ley",
    "wick",
    "hardt",
    "ner",
    "ling",
    "sen",
    "dorf",
    "hoff",
    "by",
    "well",
    "ert",
    "ach",
    "ow",
    "ski",
    "ell",
)
_COMPANY_WORDS = (
    "Nord",
    "Süd",
    "Alpen",
    "Rhein",
    "Blau",
    "Stern",
    "Kraft",
    "Licht",
    "Falk",
    "Eiche",
    "Brück",
    "Atlas",
    "Vector",
    "Orion",
    "Summit",
    "Harbor",
    "Pioneer",
    "Cobalt",
    "Granite",
    "Meridian",
)
_COMPANY_KINDS = (
    "Logistik",
    "Technik",
    "Bau",
    "Consulting",
    "Systems",
    "Foods",
    "Medical",
    "Energie",
    "Software",
    "Partners",
    "Druck",
    "Metall",
)
_LEGAL_FORMS = {"DE": "GmbH", "AT": "GmbH", "CH": "AG", "GB": "Ltd", "US": "Inc.", "FR": "SAS"}
_TITLES = (
    "CEO",
    "CFO",
    "Head of Sales",
    "Buyer",
    "Account Manager",
    "Engineer",
    "Office Manager",
    "Procurement Lead",
    "Controller",
    "Marketing Manager",
)
_TAGS = ("news", "crm", "events", "invoices", "promo")
_TRANSLITERATION = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}
)
_AS_OF = datetime(2026, 1, 1, tzinfo=UTC)

# Extra contact columns beyond canonical.CONTACT: what CRMs hold for people, and the truth.
EXTRA_CONTACT_FIELDS = (
    pa.field("mailing_street", pa.string()),
    pa.field("mailing_city", pa.string()),
    pa.field("mailing_postal_code", pa.string()),
    pa.field("mailing_country", pa.string()),
    pa.field("birth_date", pa.date32()),
    pa.field("person_id", pa.int64()),
)
CONTACT_SCHEMA = pa.schema(
    [*canonical.CONTACT, *(f for f in EXTRA_CONTACT_FIELDS if f.name not in canonical.CONTACT.names)]
)
ACCOUNT_SCHEMA = pa.schema([*canonical.ACCOUNT, pa.field("company_id", pa.int64())])


@dataclass
class _Company:
    company_id: int
    name: str
    country: str
    city: str
    postal_code: str
    street: str
    area_code: str
    landline: str  # national significant number, without trunk prefix or country code
    domain: str
    staff: list[_Person] = field(default_factory=list)


@dataclass
class _Person:
    person_id: int
    first: str
    last: str
    birth_date: date
    company: _Company
    title: str
    mailbox: str
    private_email: str
    phone: str  # national significant number
    street: str
    city: str
    postal_code: str


@dataclass(frozen=True)
class People:
    """Generated accounts and contacts (Arrow tables) with their truth columns."""

    accounts: pa.Table
    contacts: pa.Table


@lru_cache(maxsize=1)
def _nicknames() -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Given names that have nicknames in the table, and their nicknames (capitalised, sorted)."""
    lookup = NickNamer().nickname_lookup
    names = tuple(sorted(name.title() for name, nicks in lookup.items() if nicks and name.isalpha()))
    nicks = {
        name.title(): tuple(sorted(n.title() for n in lookup[name.lower()] if n.isalpha())) for name in names
    }
    return names, nicks


def strip_accents(text: str) -> str:
    """Letters without their accents (Müller -> Muller); ß is not an accent and stays."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _fold(name: str) -> str:
    """A name with case, accents and their transliterations folded away (Müller, Mueller, MULLER)."""
    plain = strip_accents(name.lower().replace("ß", "ss"))
    return re.sub("(?<=[aou])e", "", plain).replace("ss", "s")


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1 :]
    if kind == 2:  # double a letter
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice("aeinorstl") + word[i + 1 :]


def _mailbox_part(text: str) -> str:
    return re.sub(r"[^a-z]", "", strip_accents(text.translate(_TRANSLITERATION)).lower())


class _World:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.companies: list[_Company] = []
        self.people: list[_Person] = []
        self.first_names, self.nicknames = _nicknames()
        synthetic = [a + b for a in _SYLLABLES_A for b in _SYLLABLES_B]
        # Common surnames often, a long synthetic tail rarely: namesakes by chance stay plausible.
        self.surnames = list(_SURNAMES) * 6 + synthetic
        self.country_list = [c for c, w in _COUNTRY_WEIGHTS.items() for _ in range(w)]
        self.used_mailboxes: set[tuple[str, str]] = set()

    def first_name(self) -> str:
        if self.rng.random() < 0.06:
            return self.rng.choice(_UMLAUT_FIRST)
        return self.rng.choice(self.first_names)

    def company(self) -> _Company:
        rng = self.rng
        company_id = len(self.companies)
        if self.companies and rng.random() < 0.05:
            # Same name, another town (and another company): a franchise, a namesake firm.
            twin = rng.choice(self.companies)
            name = twin.name
            country = twin.country
            towns = [t for t in _COUNTRIES[country][1] if t[0] != twin.city]
        else:
            # About 14 million names: namesake companies by chance stay rare at 500,000 contacts.
            founder = f"{rng.choice(_SYLLABLES_A)}{rng.choice(_SYLLABLES_B)}{rng.choice(('', 'er', 'a', 'is', 'on'))}"
            extra = rng.choice(("", *(f" {w}" for w in _COMPANY_WORDS)))
            name = f"{founder}{extra} {rng.choice(_COMPANY_WORDS)}{rng.choice(_COMPANY_KINDS).lower()}"
            country = rng.choice(self.country_list)
            towns = list(_COUNTRIES[country][1])
        city, postal_prefix, area = rng.choice(towns)
        domain = f"{_mailbox_part(name)}-{company_id}.{country.lower() if country != 'US' else 'com'}"
        company = _Company(
            company_id=company_id,
            name=name,
            country=country,
            city=city,
            postal_code=f"{postal_prefix}{rng.randrange(100, 999)}",
            street=f"{rng.choice(_COMPANY_WORDS)}straße {rng.randrange(1, 200)}",
            area_code=area,
            landline=self.subscriber(country, area),
            domain=domain,
        )
        self.companies.append(company)
        return company

    def subscriber(self, country: str, area: str) -> str:
        """A national significant number of the country's usual length in that area."""
        digits = _NUMBER_LENGTH[country] - len(area)
        return f"{area}{self.rng.randrange(2 * 10 ** (digits - 1), 10**digits)}"

    def person(self, company: _Company, *, first: str, last: str, phone: str | None = None) -> _Person:
        rng = self.rng
        mailbox = f"{_mailbox_part(first)}.{_mailbox_part(last)}"
        n = 2
        while (mailbox, company.domain) in self.used_mailboxes:  # a namesake gets first.last2@
            mailbox = f"{_mailbox_part(first)}.{_mailbox_part(last)}{n}"
            n += 1
        self.used_mailboxes.add((mailbox, company.domain))
        person = _Person(
            person_id=len(self.people),
            first=first,
            last=last,
            birth_date=date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 52)),
            company=company,
            title=rng.choice(_TITLES),
            mailbox=mailbox,
            private_email=f"{_mailbox_part(first)}{rng.choice(('.', '_', ''))}{_mailbox_part(last)}"
            f"{rng.randrange(1, 999)}@{rng.choice(FREE_MAIL)}",
            phone=phone or self.subscriber(company.country, company.area_code),
            street=company.street,
            city=company.city,
            postal_code=company.postal_code,
        )
        company.staff.append(person)
        self.people.append(person)
        return person

    def new_people(self) -> list[_Person]:
        """One new person, or two: a family at its own company."""
        rng = self.rng
        if self.people and rng.random() < 0.04:
            # A namesake at the same company: another person with the same name.
            other = rng.choice(self.people[-200:])
            return [self.person(other.company, first=other.first, last=other.last)]
        if rng.random() < 0.03:
            # Family business: relatives at the family's company, sharing its address and landline.
            company = self.company()
            last = rng.choice(self.surnames)
            first = self.first_name()
            founder = self.person(company, first=first, last=last, phone=company.landline)
            second = self.first_name()
            while second == first:
                second = self.first_name()
            return [founder, self.person(company, first=second, last=last, phone=company.landline)]
        if not self.companies or rng.random() < 0.25:
            company = self.company()
        else:
            company = rng.choice(self.companies[-500:])
        return [self.person(company, first=self.first_name(), last=rng.choice(self.surnames))]


def _render_phone(rng: random.Random, person: _Person, source: str) -> str | None:
    if rng.random() < 0.12:
        return None
    calling = _COUNTRIES[person.company.country][0]
    digits = person.phone
    if rng.random() < 0.03:
        digits += str(rng.randrange(10))  # a digit too many
    trunk = "" if person.company.country == "US" else "0"
    style = {"salesforce": (0.8, 0.15), "hubspot": (0.4, 0.4), "erp": (0.1, 0.2)}[source]
    roll = rng.random()
    if roll < style[0]:
        return f"+{calling}{digits}"
    if roll < style[0] + style[1]:
        return f"+{calling} {digits[:3]} {digits[3:]}"
    return f"{trunk}{digits[:3]} {digits[3:]}"  # national format: no country code


def _render_contact(rng: random.Random, person: _Person, source: str) -> dict[str, object]:
    nicknames = _nicknames()[1]
    first, last = person.first, person.last
    roll = rng.random()
    if roll < 0.12 and nicknames.get(first):
        first = rng.choice(nicknames[first])
    elif roll < 0.17:
        first = f"{first[0]}."
    if rng.random() < 0.05:
        last = _typo(rng, last)
    elif rng.random() < 0.03:
        first = _typo(rng, first)
    # Transliteration: the ERP stores ASCII; HubSpot imports often lose the accents or spell them out.
    if source == "erp" or (source == "hubspot" and rng.random() < 0.5):
        spell = (lambda s: s.translate(_TRANSLITERATION)) if rng.random() < 0.7 else strip_accents
        first, last = spell(first), spell(last)
    if source == "erp" and rng.random() < 0.3:
        last = last.upper()
    roll = rng.random()
    email: str | None
    if roll < 0.10:
        email = None
    elif roll < 0.25:
        email = person.private_email
    else:
        email = f"{person.mailbox}@{person.company.domain}"
        if rng.random() < 0.08:
            local, domain = email.split("@")
            email = f"{local}+{rng.choice(_TAGS)}@{domain}"
    country: str | None = person.company.country
    if rng.random() < (0.2 if source == "hubspot" else 0.07):
        country = None
    has_address = rng.random() < (0.9 if source == "erp" else 0.6)
    birth_share = {"salesforce": 0.3, "hubspot": 0.15, "erp": 0.6}[source]
    return {
        "first_name": first,
        "last_name": last,
        "email": email.lower() if email and source != "salesforce" else email,
        "phone": _render_phone(rng, person, source),
        "title": person.title if rng.random() < 0.7 else None,
        "country": country,
        "mailing_street": person.street if has_address else None,
        "mailing_city": person.city if has_address else None,
        "mailing_postal_code": person.postal_code if has_address else None,
        "mailing_country": country if has_address else None,
        "birth_date": person.birth_date.isoformat() if rng.random() < birth_share else None,
        "person_id": person.person_id,
    }


def _account_name(rng: random.Random, company: _Company, source: str) -> str:
    legal = _LEGAL_FORMS[company.country]
    if source == "erp":
        return f"{company.name} {legal}".upper().translate(_TRANSLITERATION)
    if source == "hubspot" and rng.random() < 0.5:
        return company.name
    return f"{company.name} {legal}"


def generate_people(records: int, *, seed: int = 0) -> People:
    """About ``records`` contact records (and their accounts) across the three systems.

    Args:
        records: Contact records to generate (the result has exactly this many).
        seed: Seed of the one random generator; the same seed and size give the same tables.

    Returns:
        Accounts (canonical account columns and ``company_id``) and contacts (canonical contact
        columns, mailing address, birth date and ``person_id``).
    """
    world = _World(seed)
    rng = world.rng
    contacts: list[dict[str, object]] = []
    accounts: dict[tuple[str, int], dict[str, object]] = {}
    counters: Counter[str] = Counter()
    while len(contacts) < records:
        for person in world.new_people():
            _copy_person(rng, person, contacts, accounts, counters, records)
    return People(
        accounts=pa.Table.from_pylist(list(accounts.values()), schema=ACCOUNT_SCHEMA),
        contacts=pa.Table.from_pylist(contacts, schema=CONTACT_SCHEMA),
    )


def _copy_person(
    rng: random.Random,
    person: _Person,
    contacts: list[dict[str, object]],
    accounts: dict[tuple[str, int], dict[str, object]],
    counters: Counter[str],
    records: int,
) -> None:
    """Write the person into one to three systems (sometimes twice into one), with its account."""
    updated_at = _AS_OF - timedelta(days=1)
    copies = rng.choices((1, 2, 3), weights=(35, 40, 25))[0]
    systems = rng.sample(SOURCES, copies)
    if rng.random() < 0.05:
        systems.append(systems[0])  # entered twice in one system
    for source in systems:
        if len(contacts) >= records:
            break
        company = person.company
        key = (source, company.company_id)
        if key not in accounts:
            source_id = f"A{company.company_id}"
            accounts[key] = {
                "record_id": f"{source}:{source_id}",
                "source": source,
                "source_id": source_id,
                "name": _account_name(rng, company, source),
                "domain": company.domain if rng.random() < 0.7 else None,
                "phone": f"+{_COUNTRIES[company.country][0]}{company.landline}",
                "email": None,
                "street": company.street,
                "city": company.city,
                "postal_code": company.postal_code,
                "country": company.country if rng.random() < 0.9 else None,
                "industry": None,
                "vat_number": None,
                "annual_revenue": Decimal(rng.randrange(10_000, 10_000_000)),
                "updated_at": updated_at,
                "company_id": company.company_id,
            }
        counters[source] += 1
        source_id = f"C{counters[source]}"
        row = _render_contact(rng, person, source)
        row.update(
            record_id=f"{source}:{source_id}",
            source=source,
            source_id=source_id,
            account_record_id=accounts[key]["record_id"],
            updated_at=updated_at,
        )
        contacts.append(row)


def phenomena(people: People) -> dict[str, int]:
    """How often each documented phenomenon occurs, counted from the tables and their truth.

    Returns:
        Phenomenon -> count: records (or, for namesakes, family members and companies, people or
        companies) that show it.
    """
    _, nicknames = _nicknames()
    contacts = people.contacts.to_pylist()
    accounts = people.accounts.to_pylist()
    company_of = {a["record_id"]: a["company_id"] for a in accounts}
    by_person: dict[int, list[dict[str, object]]] = defaultdict(list)
    for row in contacts:
        by_person[int(str(row["person_id"]))].append(row)
    counts: Counter[str] = Counter()
    nickname_pairs = {(nick, name) for name, nicks in nicknames.items() for nick in nicks}
    for rows in by_person.values():
        firsts = {str(r["first_name"]) for r in rows if r["first_name"]}
        lasts = {str(r["last_name"]) for r in rows if r["last_name"]}
        if any((a, b) in nickname_pairs for a in firsts for b in firsts):
            counts["nickname"] += 1
        if len(firsts) > 1 and any(re.fullmatch(r"\w\.", f) for f in firsts):
            counts["initial"] += 1
        if any(a != b and _fold(a) == _fold(b) and re.search("[äöüßÄÖÜ]", a) for a in lasts for b in lasts):
            counts["transliteration"] += 1
        if len({_fold(x) for x in lasts}) > 1:
            counts["typo"] += 1
    for row in contacts:
        email = row["email"]
        if isinstance(email, str):
            local, _, domain = email.partition("@")
            counts["tagged_email"] += "+" in local
            counts["private_email"] += domain in FREE_MAIL
        phone = row["phone"]
        if isinstance(phone, str):
            digits = re.sub(r"\D", "", phone)
            unparsable = not phone.startswith("+") and row["country"] is None
            counts["unparsable_phone"] += unparsable or not 8 <= len(digits) <= 13
            counts["national_phone"] += not phone.startswith("+")
        counts["missing_country"] += row["country"] is None
    # Namesakes and family members: different people at one company.
    people_at: dict[tuple[object, ...], set[int]] = defaultdict(set)
    phones_at: dict[tuple[object, ...], set[tuple[int, str]]] = defaultdict(set)
    for row in contacts:
        company = company_of[str(row["account_record_id"])]
        first = str(row["first_name"] or "")
        last = strip_accents(str(row["last_name"] or "").translate(_TRANSLITERATION)).lower()
        people_at[(company, first.lower(), last)].add(int(str(row["person_id"])))
        if isinstance(row["phone"], str):
            digits = re.sub(r"\D", "", row["phone"])[-8:]
            phones_at[(company, last, digits)].add((int(str(row["person_id"])), first.lower()))
    counts["namesake"] = sum(len(ids) > 1 for ids in people_at.values())
    counts["family_member"] = sum(
        len({p for p, _ in members}) > 1 and len({f for _, f in members}) > 1
        for members in phones_at.values()
    )
    names: dict[tuple[str, str], set[tuple[int, str]]] = defaultdict(set)
    for account in accounts:
        key = (
            strip_accents(str(account["name"]).translate(_TRANSLITERATION)).lower(),
            str(account["source"]),
        )
        names[key].add((int(str(account["company_id"])), str(account["city"])))
    counts["same_named_company"] = sum(
        len({c for c, _ in found}) > 1 and len({city for _, city in found}) > 1 for found in names.values()
    )
    return dict(counts)
