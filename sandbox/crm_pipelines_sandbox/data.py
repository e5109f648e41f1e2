"""Deterministic, dirty sandbox data: the CRM stores, the ERP database, the SFTP finance drop and the truth.

The generator builds a world of true companies (about ``contacts / 5``) and true people
(``contacts``) and writes how each system has recorded them: the same company appears in one to
three systems with different spellings, legal-suffix variants, phone formats and country
spellings; people appear in Salesforce and/or HubSpot with e-mail case, nickname and typo
variants, some entered twice; a small, deterministic share of rows is invalid in one of a few
documented ways. ``truth.parquet`` records, for every row of every dataset, which true entity it
is and why it is invalid, so tests can check that deduplication and quarantine got it right.

Same seed and arguments give byte-identical files: one ``random.Random(seed)`` consumed in a fixed
order, no wall clock (every timestamp derives from ``as_of``). Rows are generated and inserted in
batches, so memory stays flat up to a million contacts.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import sqlite3
from bisect import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate, product
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipelines_sandbox import erp_db
from crm_pipelines_sandbox.other_crms import OtherCrmSeeder
from crm_pipelines_sandbox.simulators import store

# Datasets of the truth file: '<source>.<table or file>'.
PARTY_DATASETS = (
    "salesforce.Account",
    "salesforce.Contact",
    "hubspot.companies",
    "hubspot.contacts",
    "erp.customers",
)
DATASETS = (
    "salesforce.Account",
    "salesforce.Contact",
    "salesforce.Opportunity",
    "hubspot.companies",
    "hubspot.contacts",
    "hubspot.deals",
    "erp.customers",
    "erp.products",
    "erp.sales_orders",
    "erp.sales_order_lines",
    "erp.invoices",
    "erp.payments",
    "sftp.invoices",
    "sftp.payments",
)
# Datasets of people captured as leads (the truth names the person each one is); not in DATASETS,
# whose per-dataset counters draw from the main stream.
LEAD_DATASETS = ("salesforce.Lead",)
# Kinds of invalid rows; an invalid_reason is '<kind>: <field>=<value>' (or '<kind>: <fields>').
INVALID_KINDS = (
    "bad_date",
    "negative_amount",
    "unknown_country",
    "invalid_email",
    "missing_required",
    "unknown_currency",
    "wrong_field_count",
)
TRUTH_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("entity_id", pa.string()),
        pa.field("invalid_reason", pa.string()),
        pa.field("deleted", pa.bool_(), nullable=False),
    ]
)
INVOICE_CSV_COLUMNS = (
    "invoice_number",
    "customer_code",
    "invoice_date",
    "due_date",
    "currency",
    "amount_net",
    "amount_tax",
    "amount_gross",
    "status",
)
PAYMENT_CSV_COLUMNS = ("payment_reference", "invoice_number", "payment_date", "amount", "currency", "method")

# Every spelling the systems use for a country: [0] the English name, [1] the ISO alpha-2 code.
COUNTRY_SPELLINGS: dict[str, tuple[str, ...]] = {
    "US": ("United States", "US", "USA", "U.S.", "United States of America", "U.S.A."),
    "GB": ("United Kingdom", "GB", "UK", "Great Britain", "U.K."),
    "DE": ("Germany", "DE", "Deutschland", "DEU", "germany"),
    "FR": ("France", "FR", "FRA", "france"),
    "NL": ("Netherlands", "NL", "The Netherlands", "Nederland", "Holland"),
    "ES": ("Spain", "ES", "España", "Espana", "ESP"),
    "IT": ("Italy", "IT", "Italia", "ITA"),
    "AT": ("Austria", "AT", "Österreich", "AUT"),
    "CH": ("Switzerland", "CH", "Schweiz", "Suisse", "CHE"),
    "SE": ("Sweden", "SE", "Sverige", "SWE"),
}
UNKNOWN_COUNTRIES = ("Atlantis", "XX")
UNKNOWN_CURRENCY = "ZZZ"

_BATCH_COMPANIES = 1000  # about 5k people and at most ~10k rows per table per batch
_INVALID_EVERY = 200  # one row in 200 (0.5%) of each dataset is invalid
_WINDOW_DAYS = 730  # history spans the two years before as_of


@dataclass(frozen=True)
class SandboxLayout:
    """Where :func:`generate_sandbox` writes everything under one root folder."""

    salesforce_store: Path
    hubspot_store: Path
    erp_db: Path
    sftp_root: Path
    truth: Path
    truth_summary: Path
    crm_dir: Path  # the other CRMs' stores, <system>.sqlite (see other_crms.py)

    @classmethod
    def under(cls, root: Path) -> SandboxLayout:
        root = Path(root)
        return cls(
            salesforce_store=root / "salesforce.sqlite",
            hubspot_store=root / "hubspot.sqlite",
            erp_db=root / "erp.sqlite",
            sftp_root=root / "sftp",
            truth=root / "truth.parquet",
            truth_summary=root / "truth_summary.json",
            crm_dir=root / "crms",
        )

    def crm_store(self, system: str) -> Path:
        """The store of one of the other CRMs."""
        return self.crm_dir / f"{system}.sqlite"

    @property
    def finance_dir(self) -> Path:
        """Folder of the billing system's end-of-day files (``/outbound/finance`` on the SFTP server)."""
        return self.sftp_root / "outbound" / "finance"

    def invoices_file(self, as_of: date) -> Path:
        return self.finance_dir / f"invoices_{as_of.isoformat()}.csv"

    def payments_file(self, as_of: date) -> Path:
        # XML, so the demo runs a second drop format; one <Payment> per line keeps the truth's
        # line numbers meaningful as in the invoices CSV.
        return self.finance_dir / f"payments_{as_of.isoformat()}.xml"


def as_of_end(as_of: date) -> datetime:
    """The instant every sandbox timestamp is strictly before: midnight UTC after ``as_of``."""
    return datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)


# ---------------------------------------------------------------------------------------------
# Word lists: small on purpose, variety comes from combining them.
# ---------------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(",") if word.strip())


@dataclass(frozen=True)
class _Language:
    first_names: tuple[str, ...]
    brand_prefixes: tuple[str, ...]
    brand_roots: tuple[str, ...]
    nouns: tuple[str, ...]
    streets: tuple[str, ...]  # templates with {n} for the house number


@dataclass(frozen=True)
class _Country:
    code: str
    weight: float
    calling: str
    trunk: str  # national trunk prefix ('' where there is none, e.g. Spain, Italy)
    cities: tuple[tuple[str, str, int, str, str], ...]  # name, area, subscriber digits, postal prefix, leads
    mobiles: tuple[tuple[str, int, str], ...]  # mobile prefix, subscriber digits, lead digits
    language: _Language
    last_names: tuple[str, ...]
    tld: str
    currency: str
    tax_rate: float
    legal_forms: tuple[tuple[str, ...], ...]  # canonical form first, then the spellings seen in systems
    vat: str  # VAT number layout: 'D' is a digit, anything else literal; '' when there is none


_EN = _Language(
    _words(
        "James, John, Robert, Michael, William, David, Richard, Joseph, Thomas, Christopher, Daniel, "
        "Matthew, Anthony, Steven, Andrew, Joshua, Kevin, Brian, Edward, Jonathan, Nicholas, Benjamin, "
        "Samuel, Alexander, Patrick, Peter, Mary, Patricia, Jennifer, Linda, Elizabeth, Barbara, Susan, "
        "Jessica, Sarah, Karen, Nancy, Lisa, Margaret, Sandra, Ashley, Emily, Michelle, Amanda, Katherine, "
        "Rebecca, Laura, Emma, Olivia, Charlotte, Hannah, Victoria, Samantha"
    ),
    _words(
        "North, South, East, West, Blue, Red, Green, Silver, Golden, Iron, Summit, Pioneer, Atlas, Apex, "
        "Bright, Clear, Eagle, Falcon, Harbor, Liberty, Maple, Oak, Pine, River, Stone, Star, Sun, Sky, "
        "Ocean, Peak, Prime, Crest, Cedar, Granite, Horizon"
    ),
    _words(
        "field, line, point, bridge, gate, way, works, wave, light, core, path, view, ridge, port, mark, tech, soft, vale"
    ),
    _words(
        "Systems, Logistics, Software, Manufacturing, Analytics, Solutions, Technologies, Industries, "
        "Partners, Consulting, Foods, Energy, Healthcare, Media, Networks, Labs, Holdings, Engineering, "
        "Robotics, Supply, Materials, Capital, Electronics, Pharma, Retail, Security, Dynamics, "
        "Instruments, Motors, Textiles"
    ),
    _words(
        "{n} Main Street, {n} Market Street, {n} Oak Avenue, {n} Park Avenue, {n} Station Road, "
        "{n} High Street, {n} Church Road, {n} Mill Lane, {n} Victoria Road, {n} Elm Street"
    ),
)
_DE = _Language(
    _words(
        "Thomas, Michael, Andreas, Stefan, Christian, Markus, Alexander, Tobias, Sebastian, Matthias, "
        "Johannes, Florian, Daniel, Jürgen, Wolfgang, Klaus, Uwe, Frank, Jan, Lukas, Felix, Maximilian, "
        "Jonas, Sabine, Katharina, Julia, Anna, Stefanie, Claudia, Andrea, Nicole, Petra, Monika, Laura, "
        "Lena, Sarah, Lisa, Christina, Susanne, Birgit, Franziska, Johanna, Elisabeth, Sophie, Hannah"
    ),
    _words(
        "Nord, Süd, Ost, West, Alpen, Rhein, Elb, Berg, Wald, Stahl, Licht, Blau, Grün, Hansa, Donau, "
        "Isar, Main, Stern, Sonnen, Feld, Eichen, Linden, Falken, Adler, Kristall, Brücken, Turm, Quell, "
        "Mühlen, Kraft, Hoch, Tal, Fels, Silber, Gold"
    ),
    _words(
        "werk, tech, bau, haus, plan, form, guss, tronik, mechanik, soft, data, chem, med, tec, trans, hof"
    ),
    _words(
        "Maschinenbau, Logistik, Elektronik, Software, Handel, Industrietechnik, Medizintechnik, "
        "Verpackung, Anlagenbau, Beratung, Holding, Automation, Kunststofftechnik, Spedition, "
        "Antriebstechnik, Metallbau, Systemtechnik, Druckerei, Energietechnik, Lebensmittel, Bau, "
        "Informatik, Messtechnik, Werkzeugbau, Umwelttechnik, Optik, Chemie, Textil, Möbel, Immobilien"
    ),
    _words(
        "Hauptstraße {n}, Bahnhofstraße {n}, Industriestraße {n}, Gartenweg {n}, Schillerstraße {n}, "
        "Goethestraße {n}, Am Markt {n}, Lindenallee {n}, Friedrichstraße {n}, Kaiserstraße {n}"
    ),
)
_FR = _Language(
    _words(
        "Jean, Pierre, Michel, Philippe, Nicolas, Alain, Christophe, Frédéric, Laurent, Olivier, Julien, "
        "Sébastien, Thomas, Antoine, Mathieu, Guillaume, Alexandre, François, Éric, Vincent, Marie, "
        "Nathalie, Isabelle, Sylvie, Catherine, Sophie, Christine, Valérie, Sandrine, Stéphanie, Céline, "
        "Aurélie, Julie, Camille, Léa, Claire, Émilie, Anne, Caroline, Manon"
    ),
    _words(
        "Nord, Sud, Azur, Alpes, Loire, Seine, Rhône, Atlantique, Bretagne, Provence, Lumière, Étoile, "
        "Soleil, Océan, Horizon, Avenir, Cristal, Argent, Vert, Bleu, Grand, Mont, Val, Saint, Ouest"
    ),
    _words("tech, log, com, sys, nov, form, med, tel, net, gest"),
    _words(
        "Industrie, Logistique, Informatique, Conseil, Distribution, Technologies, Services, Systèmes, "
        "Ingénierie, Énergie, Transports, Construction, Électronique, Emballage, Alimentaire, Santé, "
        "Solutions, Mécanique, Chimie, Textile"
    ),
    _words(
        "{n} rue de la République, {n} avenue Victor Hugo, {n} boulevard Haussmann, {n} rue du Faubourg, "
        "{n} rue de la Paix, {n} avenue Jean Jaurès, {n} rue Nationale, {n} place de la Gare"
    ),
)
_NL = _Language(
    _words(
        "Jan, Pieter, Hendrik, Johannes, Cornelis, Willem, Dirk, Gerrit, Kees, Henk, Bas, Thijs, Daan, "
        "Sem, Lars, Jeroen, Martijn, Maarten, Ruud, Sander, Maria, Anna, Johanna, Elisabeth, Cornelia, "
        "Sanne, Lotte, Femke, Anouk, Eva, Lisa, Emma, Sophie, Julia, Inge, Marieke, Ingrid, Linda, Esther"
    ),
    _words(
        "Noord, Zuid, Oost, West, Holland, Delta, Polder, Duin, Tulp, Molen, Haven, Dijk, Zee, Rijn, "
        "Maas, Amstel, Kroon, Ster, Zon, Groen"
    ),
    _words("tech, data, werk, net, log, soft, bouw, trans, med, plan"),
    _words(
        "Logistiek, Techniek, Installatie, Handel, Software, Bouw, Transport, Groep, Advies, Systemen, "
        "Automatisering, Verpakking, Energie, Voeding, Metaal, Elektro, Consultancy, Services, Media, Holding"
    ),
    _words(
        "Keizersgracht {n}, Herengracht {n}, Stationsplein {n}, Dorpsstraat {n}, Kerkstraat {n}, "
        "Marktplein {n}, Industrieweg {n}, Havenstraat {n}"
    ),
)
_ES = _Language(
    _words(
        "José, Antonio, Manuel, Francisco, Juan, David, Javier, Daniel, Carlos, Jesús, Alejandro, Miguel, "
        "Rafael, Pablo, Sergio, Fernando, Jorge, Alberto, Luis, Ignacio, María, Carmen, Ana, Isabel, Laura, "
        "Cristina, Marta, Lucía, Elena, Sara, Paula, Raquel, Pilar, Rosa, Dolores, Teresa, Beatriz, Silvia"
    ),
    _words(
        "Ibero, Sol, Mar, Norte, Sur, Levante, Atlántica, Cantabria, Andalucía, Castilla, Medi, Sierra, "
        "Costa, Luz, Río, Oro, Plata, Verde, Azul, Nova"
    ),
    _words("tec, log, net, sis, com, med, trans, gest"),
    _words(
        "Logística, Tecnología, Ingeniería, Distribución, Construcciones, Servicios, Sistemas, "
        "Alimentación, Energía, Transportes, Consultoría, Industrial, Soluciones, Comercial, Electrónica, "
        "Embalajes, Farmacéutica, Automoción, Inmobiliaria, Textil"
    ),
    # Spanish and Italian addresses put the house number after a comma.
    tuple(
        f"{street}, {{n}}"
        for street in _words(
            "Calle Mayor, Gran Vía, Paseo de la Castellana, Avenida Diagonal, Calle de Alcalá, Calle Real, "
            "Avenida de la Constitución, Plaza España"
        )
    ),
)
_IT = _Language(
    _words(
        "Giuseppe, Giovanni, Antonio, Mario, Luigi, Francesco, Angelo, Vincenzo, Pietro, Salvatore, Carlo, "
        "Franco, Domenico, Bruno, Paolo, Michele, Giorgio, Alessandro, Marco, Roberto, Maria, Anna, "
        "Giuseppina, Rosa, Angela, Giovanna, Teresa, Lucia, Carmela, Caterina, Francesca, Chiara, Giulia, "
        "Sara, Valentina, Elena, Paola, Silvia, Federica"
    ),
    _words(
        "Alpi, Italo, Tirreno, Adria, Sole, Luna, Stella, Monte, Valle, Lago, Mare, Oro, Argento, Verde, "
        "Azzurra, Nord, Sud, Roma, Lumi, Vento"
    ),
    _words("tec, log, sys, med, net, form, trans, chim"),
    _words(
        "Logistica, Tecnologie, Ingegneria, Meccanica, Distribuzione, Costruzioni, Servizi, Sistemi, "
        "Alimentari, Energia, Trasporti, Consulenza, Industria, Soluzioni, Commerciale, Elettronica, "
        "Imballaggi, Farmaceutica, Automazione, Tessile"
    ),
    tuple(
        f"{street}, {{n}}"
        for street in _words(
            "Via Roma, Via Garibaldi, Corso Italia, Via Mazzini, Via Dante, Via Verdi, Corso Vittorio Emanuele, "
            "Via Cavour"
        )
    ),
)
_SE = _Language(
    _words(
        "Lars, Anders, Johan, Per, Erik, Karl, Nils, Mikael, Jan, Hans, Peter, Fredrik, Magnus, Oskar, "
        "Gustav, Henrik, Daniel, Kristoffer, Olof, Björn, Anna, Eva, Maria, Karin, Kristina, Lena, Sara, "
        "Emma, Ingrid, Elin, Johanna, Margareta, Linnea, Sofia, Astrid, Maja, Ida, Frida, Malin, Helena"
    ),
    _words(
        "Nord, Väst, Öst, Syd, Fjäll, Skog, Sjö, Berg, Ström, Norr, Gran, Björk, Ek, Sol, Stjärn, Is, "
        "Vind, Havs, Dal, Älv"
    ),
    _words("tek, data, verk, log, med, com, bygg, trans"),
    _words(
        "Logistik, Teknik, Industri, Handel, Bygg, Konsult, Energi, Mjukvara, System, Transport, "
        "Elektronik, Förpackning, Livsmedel, Medicin, Data, Fastigheter, Verkstad, Automation, Textil, Design"
    ),
    _words(
        "Drottninggatan {n}, Storgatan {n}, Kungsgatan {n}, Sveavägen {n}, Götgatan {n}, Vasagatan {n}, "
        "Hamngatan {n}, Parkvägen {n}"
    ),
)

_DE_FORMS = (
    ("GmbH", "Gmbh", "GMBH", "G.m.b.H.", ""),
    ("AG", "Aktiengesellschaft", ""),
    ("GmbH & Co. KG", "GmbH & Co KG", "GmbH u. Co. KG", ""),
)


def _cities(text: str) -> tuple[tuple[str, str, int, str, str], ...]:
    """'City:area:subscriber digits:postal prefix[:lead digits]' items, comma separated.

    Lead digits are the first digits libphonenumber accepts for the area's subscriber numbers.
    """
    out = []
    for item in _words(text):
        name, area, digits, postal, *leads = item.split(":")
        out.append((name, area, int(digits), postal, leads[0] if leads else "23456789"))
    return tuple(out)


def _mobiles(text: str) -> tuple[tuple[str, int, str], ...]:
    """'prefix:subscriber digits[:lead digits]' items, comma separated."""
    out = []
    for item in _words(text):
        prefix, digits, *leads = item.split(":")
        out.append((prefix, int(digits), leads[0] if leads else "23456789"))
    return tuple(out)


_COUNTRIES: tuple[_Country, ...] = (
    _Country(
        "US", 0.28, "1", "1",
        _cities(
            "New York:212:7:100, San Francisco:415:7:941, Chicago:312:7:606, Boston:617:7:021, "
            "Seattle:206:7:981, Austin:512:7:787, Denver:303:7:802, Atlanta:404:7:303, "
            "Los Angeles:213:7:900, Miami:305:7:331"
        ),
        _mobiles("646:7, 628:7, 872:7, 857:7, 425:7"),
        _EN,
        _words(
            "Smith, Johnson, Williams, Brown, Jones, Garcia, Miller, Davis, Rodriguez, Martinez, Hernandez, "
            "Lopez, Gonzalez, Wilson, Anderson, Thomas, Taylor, Moore, Jackson, Martin, Lee, Thompson, White, "
            "Harris, Clark, Lewis, Robinson, Walker, Young, Allen, King, Wright, Scott, Hill, Green, Adams, "
            "Baker, Nelson, Carter, Mitchell, O'Brien, Murphy"
        ),
        "com", "USD", 0.0,
        (("Inc.", "Inc", "Incorporated", ""), ("LLC", "L.L.C.", ""), ("Corp.", "Corporation", "Corp", "")),
        "",
    ),
    _Country(
        "GB", 0.14, "44", "0",
        _cities(
            "London:20:8:EC1A:378, Manchester:161:7:M1, Birmingham:121:7:B1:234567, Leeds:113:7:LS1:23458, "
            "Glasgow:141:7:G1, Edinburgh:131:7:EH1:2345678, Bristol:117:7:BS1:2349"
        ),
        _mobiles("74:8, 75:8, 77:8, 78:8, 79:8"),
        _EN,
        _words(
            "Smith, Jones, Taylor, Brown, Williams, Wilson, Johnson, Davies, Robinson, Wright, Thompson, Evans, "
            "Walker, White, Roberts, Green, Hall, Wood, Jackson, Clarke, Patel, Khan, Lewis, James, Phillips, "
            "Mason, Mitchell, Rose, Hughes, Edwards, Turner, Cooper, Hill, Ward, Morris, Moore, Harris, King"
        ),
        "co.uk", "GBP", 0.20,
        (("Ltd", "Ltd.", "Limited", "LTD", ""), ("PLC", "plc", "Public Limited Company", "")),
        "GBDDDDDDDDD",
    ),
    _Country(
        "DE", 0.16, "49", "0",
        _cities(
            "Berlin:30:8:10, Hamburg:40:8:20, München:89:8:80, Köln:221:7:50, Frankfurt am Main:69:8:60, "
            "Stuttgart:711:7:70, Düsseldorf:211:7:40, Leipzig:341:7:04"
        ),
        _mobiles("151:8, 160:7, 170:7, 171:7, 176:8"),
        _DE,
        _words(
            "Müller, Schmidt, Schneider, Fischer, Weber, Meyer, Wagner, Becker, Schulz, Hoffmann, Schäfer, "
            "Koch, Bauer, Richter, Klein, Wolf, Schröder, Neumann, Schwarz, Zimmermann, Braun, Krüger, Hofmann, "
            "Hartmann, Lange, Schmitt, Werner, Schmitz, Krause, Meier, Lehmann, Schmid, Schulze, Maier, "
            "Köhler, Herrmann, König, Walter, Mayer, Huber"
        ),
        "de", "EUR", 0.19, _DE_FORMS, "DEDDDDDDDDD",
    ),
    _Country(
        "FR", 0.10, "33", "0",
        _cities(
            "Paris:1:8:750, Lyon:472:6:690, Marseille:491:6:130, Toulouse:561:6:310, Lille:320:6:590, "
            "Bordeaux:556:6:330, Nantes:240:6:440"
        ),
        _mobiles("6:8:245678, 7:8:3456789"),
        _FR,
        _words(
            "Martin, Bernard, Dubois, Thomas, Robert, Richard, Petit, Durand, Leroy, Moreau, Simon, Laurent, "
            "Lefebvre, Michel, Garcia, David, Bertrand, Roux, Vincent, Fournier, Morel, Girard, André, "
            "Lefèvre, Mercier, Dupont, Lambert, Bonnet, François, Martinez"
        ),
        "fr", "EUR", 0.20,
        (("SA", "S.A.", ""), ("SAS", "S.A.S.", ""), ("SARL", "S.A.R.L.", "Sarl", "")),
        "FRDDDDDDDDDDD",
    ),
    _Country(
        "NL", 0.08, "31", "0",
        _cities("Amsterdam:20:7:10, Rotterdam:10:7:30, Den Haag:70:7:25, Utrecht:30:7:35, Eindhoven:40:7:56"),
        _mobiles("6:8:234568"),
        _NL,
        _words(
            "de Jong, Jansen, de Vries, van den Berg, van Dijk, Bakker, Janssen, Visser, Smit, Meijer, de Boer, "
            "Mulder, de Groot, Bos, Vos, Peters, Hendriks, van Leeuwen, Dekker, Brouwer, de Wit, Dijkstra, "
            "Smits, de Graaf, van der Meer, van der Linden, Kok, Jacobs, de Haan, Vermeulen"
        ),
        "nl", "EUR", 0.21, (("B.V.", "BV", "B.V", ""), ("N.V.", "NV", "")), "NLDDDDDDDDDB01",
    ),
    _Country(
        "ES", 0.08, "34", "",
        _cities("Madrid:91:7:280, Barcelona:93:7:080, Valencia:96:7:460, Sevilla:95:7:410, Bilbao:94:7:480"),
        _mobiles("6:8"),
        _ES,
        _words(
            "García, Rodríguez, González, Fernández, López, Martínez, Sánchez, Pérez, Gómez, Martín, Jiménez, "
            "Ruiz, Hernández, Díaz, Moreno, Muñoz, Álvarez, Romero, Alonso, Gutiérrez, Navarro, Torres, "
            "Domínguez, Vázquez, Ramos, Gil, Ramírez, Serrano, Blanco, Molina"
        ),
        "es", "EUR", 0.21, (("S.L.", "SL", "S.L.U.", ""), ("S.A.", "SA", "")), "ESBDDDDDDDD",
    ),
    _Country(
        "IT", 0.06, "39", "",
        _cities(
            "Roma:06:8:001, Milano:02:8:201, Torino:011:7:101, Napoli:081:7:801, Firenze:055:7:501, "
            "Bologna:051:7:401"
        ),
        _mobiles("347:7, 333:7, 320:7, 339:7"),
        _IT,
        _words(
            "Rossi, Russo, Ferrari, Esposito, Bianchi, Romano, Colombo, Ricci, Marino, Greco, Bruno, Gallo, "
            "Conti, De Luca, Mancini, Costa, Giordano, Rizzo, Lombardi, Moretti, Barbieri, Fontana, Santoro, "
            "Mariani, Rinaldi, Caruso, Ferrara, Galli, Martini, Leone"
        ),
        "it", "EUR", 0.22, (("S.r.l.", "SRL", "Srl", ""), ("S.p.A.", "SpA", "SPA", "")), "ITDDDDDDDDDDD",
    ),
    _Country(
        "AT", 0.03, "43", "0",
        _cities("Wien:1:7:10, Graz:316:6:80, Linz:732:6:40, Salzburg:662:6:50, Innsbruck:512:6:60"),
        _mobiles("664:7, 676:7, 699:8"),
        _DE,
        _words(
            "Gruber, Huber, Bauer, Wagner, Müller, Pichler, Steiner, Moser, Mayer, Hofer, Leitner, Berger, "
            "Fuchs, Eder, Fischer, Schmid, Winkler, Weber, Schwarz, Maier, Schneider, Reiter, Mayr, Wimmer, "
            "Egger, Brunner, Lang, Auer"
        ),
        "at", "EUR", 0.20, _DE_FORMS[:2], "ATUDDDDDDDD",
    ),
    _Country(
        "CH", 0.04, "41", "0",
        _cities("Zürich:44:7:80, Genève:22:7:12, Basel:61:7:40, Bern:31:7:30, Lausanne:21:7:10"),
        _mobiles("79:7, 78:7, 76:7"),
        _DE,
        _words(
            "Müller, Meier, Schmid, Keller, Weber, Huber, Schneider, Meyer, Steiner, Fischer, Gerber, Brunner, "
            "Baumann, Frei, Zimmermann, Moser, Widmer, Wyss, Graf, Roth, Suter, Bühler, Bachmann, Favre, "
            "Rochat, Bernasconi, Girard"
        ),
        "ch", "CHF", 0.081, (("AG", "A.G.", ""), ("GmbH", "Gmbh", ""), ("SA", "S.A.", "")),
        "CHE-DDD.DDD.DDD MWST",
    ),
    _Country(
        "SE", 0.03, "46", "0",
        _cities("Stockholm:8:7:111, Göteborg:31:7:411, Malmö:40:7:211, Uppsala:18:6:753"),
        _mobiles("70:7, 72:7, 73:7, 76:7"),
        _SE,
        _words(
            "Andersson, Johansson, Karlsson, Nilsson, Eriksson, Larsson, Olsson, Persson, Svensson, "
            "Gustafsson, Pettersson, Jonsson, Jansson, Hansson, Bengtsson, Jönsson, Lindberg, Jakobsson, "
            "Magnusson, Olofsson, Lindström, Lindqvist, Lindgren, Berg, Axelsson, Bergström, Lundberg, Lind, "
            "Lundgren, Lundqvist"
        ),
        "se", "SEK", 0.25, (("AB", "Aktiebolag", "A.B.", ""),), "SEDDDDDDDDDD01",
    ),
)  # fmt: skip

_NICKNAMES: dict[str, tuple[str, ...]] = {
    name: _words(nicks.replace("/", ","))
    for name, nicks in (
        item.split("=")
        for item in _words(
            "William=Bill/Will, Robert=Bob/Rob, Richard=Rick, James=Jim, Michael=Mike, Elizabeth=Liz/Beth, "
            "Jennifer=Jen, Patricia=Pat, Joseph=Joe, Thomas=Tom, Christopher=Chris, Daniel=Dan, Matthew=Matt, "
            "Anthony=Tony, Steven=Steve, Andrew=Andy, Joshua=Josh, Katherine=Kate/Kathy, "
            "Margaret=Maggie/Peggy, Susan=Sue, Jessica=Jess, Samantha=Sam, Alexander=Alex, Nicholas=Nick, "
            "Benjamin=Ben, Jonathan=Jon, Edward=Ed/Ted, Rebecca=Becky, Victoria=Vicky, Johannes=Hannes/Jo, "
            "Katharina=Kathi, Christian=Chris, Stefanie=Steffi, Wolfgang=Wolf, Matthias=Matze, "
            "Andreas=Andi, Tobias=Tobi, Sebastian=Basti, Maximilian=Max, Franziska=Franzi, Nicolas=Nico, "
            "Alexandre=Alex, Christophe=Chris, Frédéric=Fred, Catherine=Cathy, Isabelle=Isa, "
            "Stéphanie=Steph, Hendrik=Henk, Cornelis=Kees, Pieter=Piet, José=Pepe, Francisco=Paco, "
            "Manuel=Manolo, Dolores=Lola, Ignacio=Nacho, Giuseppe=Beppe/Peppe, Giovanni=Gianni, "
            "Alessandro=Sandro, Francesco=Franco, Kristoffer=Kris, Margareta=Maggan, Fredrik=Fredde"
        )
    )
}
_TITLES = _words(
    "CEO, CFO, CTO, COO, Managing Director, Head of Sales, Sales Manager, Account Manager, Purchasing Manager, "
    "Procurement Lead, Operations Manager, IT Director, Finance Manager, Controller, Marketing Manager, "
    "Office Manager, VP Sales, Head of IT, Buyer, Project Engineer, Accounts Payable Clerk, Supply Chain Manager"
)
# Salesforce Industry picklist value and the HubSpot industry enumeration value for the same thing.
_INDUSTRIES = tuple(
    tuple(item.split("=", 1))
    for item in _words(
        "Technology=COMPUTER_SOFTWARE, Manufacturing=MACHINERY, Retail=RETAIL, Finance=FINANCIAL_SERVICES, "
        "Healthcare=HOSPITAL_HEALTH_CARE, Energy=OIL_ENERGY, Transportation=LOGISTICS_AND_SUPPLY_CHAIN, "
        "Consulting=MANAGEMENT_CONSULTING, Telecommunications=TELECOMMUNICATIONS, "
        "Food & Beverage=FOOD_BEVERAGES, Construction=CONSTRUCTION, Chemicals=CHEMICALS"
    )
)
_SF_STAGES = (
    ("Prospecting", 0.10),
    ("Qualification", 0.08),
    ("Needs Analysis", 0.06),
    ("Value Proposition", 0.05),
    ("Id. Decision Makers", 0.04),
    ("Perception Analysis", 0.03),
    ("Proposal/Price Quote", 0.07),
    ("Negotiation/Review", 0.07),
    ("Closed Won", 0.30),
    ("Closed Lost", 0.20),
)
_HS_STAGES = (
    ("appointmentscheduled", 0.12),
    ("qualifiedtobuy", 0.10),
    ("presentationscheduled", 0.08),
    ("decisionmakerboughtin", 0.08),
    ("contractsent", 0.10),
    ("closedwon", 0.32),
    ("closedlost", 0.20),
)
# HubSpot contacts' lifecycle stages (None: never set) and how often; leads are the three lead stages.
_HS_LIFECYCLE = (
    (None, 0.10),
    ("subscriber", 0.08),
    ("lead", 0.14),
    ("marketingqualifiedlead", 0.08),
    ("salesqualifiedlead", 0.05),
    ("opportunity", 0.10),
    ("customer", 0.40),
    ("other", 0.05),
)
_HS_FUNNEL = ("lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer")
# hs_lead_status options a rep picks in each lead stage (HubSpot's defaults).
_HS_LEAD_STATUSES = {
    "lead": ("NEW", "NEW", "OPEN", "ATTEMPTED_TO_CONTACT", "BAD_TIMING", "UNQUALIFIED"),
    "marketingqualifiedlead": ("OPEN", "IN_PROGRESS", "ATTEMPTED_TO_CONTACT", "CONNECTED", "BAD_TIMING"),
    "salesqualifiedlead": ("IN_PROGRESS", "CONNECTED", "OPEN_DEAL", "OPEN_DEAL"),
}
# Salesforce's default Lead Source picklist.
_SF_LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
# Salesforce Case picklists (the org defaults) and how often each status is current.
_SF_CASE_STATUSES = (("New", 0.10), ("Working", 0.25), ("Escalated", 0.05), ("Closed", 0.60))
_SF_CASE_PRIORITIES = ("High", "Medium", "Medium", "Low")
_SF_CASE_ORIGINS = ("Email", "Email", "Web", "Phone")
_SF_CASE_TOPICS = (
    ("Invoice shows the wrong amount", "Question", "Other"),
    ("Machine stops after ten minutes", "Problem", "Breakdown"),
    ("Installation appointment needed", "Feature Request", "Installation"),
    ("Performance dropped after the update", "Problem", "Performance"),
    ("Request for the maintenance manual", "Question", "Feedback"),
)
_DEAL_TOPICS = _words(
    "New Business, Renewal, Expansion, Upsell, Service Contract, Pilot, Framework Agreement, Spare Parts, "
    "Annual Maintenance, Rollout Phase 2"
)
_PRODUCT_ADJECTIVES = _words("Industrial, Compact, Heavy-Duty, Precision, Smart, Modular, Premium, Standard")
_PRODUCT_NOUNS = _words(
    "Pump, Valve, Sensor, Controller, Motor, Gearbox, Bearing, Cable Set, Filter, Panel, Drive, Actuator, "
    "Relay, Switch, Coupling, Service Hour, Maintenance Kit"
)
_PAYMENT_METHODS = ("bank_transfer", "bank_transfer", "bank_transfer", "direct_debit", "card", "cheque")
_PRIVATE_MAIL = ("gmail.com", "outlook.com", "web.de", "yahoo.com", "icloud.com")
_AP_MAILBOXES = ("invoices", "ap", "accounting", "billing", "finance")
_WEBSITES = ("www.{d}", "https://www.{d}", "http://{d}", "{d}", "https://{d}/")
# Which systems hold a company, (Salesforce, HubSpot, ERP), and how often.
_PRESENCE = (
    ((True, False, False), 0.15),
    ((False, True, False), 0.15),
    ((False, False, True), 0.10),
    ((True, True, False), 0.20),
    ((True, False, True), 0.15),
    ((False, True, True), 0.10),
    ((True, True, True), 0.15),
)
# Phone styles: 0 '+CC area sub', 1 '+CCareasub', 2 national, 3 '(national) xxx-xxxx', 4 '00CC area sub'.
_PHONE_STYLE_WEIGHTS = {
    "salesforce": (0.30, 0.05, 0.25, 0.30, 0.10),
    "hubspot": (0.35, 0.25, 0.30, 0.00, 0.10),
    "erp": (0.20, 0.00, 0.50, 0.10, 0.20),
    "crm": (0.40, 0.10, 0.30, 0.10, 0.10),  # the other CRMs (sandbox/crm_pipelines_sandbox/other_crms.py)
}
# Share of rows spelling the country as its English name, as its code; the rest use a variant.
_COUNTRY_SHARES = {"salesforce": (0.7, 0.1), "hubspot": (0.5, 0.2), "erp": (0.1, 0.75), "crm": (0.6, 0.2)}
_FOLD = str.maketrans(
    {
        "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e", "ê": "e", "ë": "e", "á": "a",
        "à": "a", "â": "a", "å": "a", "í": "i", "ì": "i", "î": "i", "ï": "i", "ó": "o", "ò": "o",
        "ô": "o", "ø": "o", "ú": "u", "ù": "u", "û": "u", "ñ": "n", "ç": "c", "'": "", " ": "", "-": "",
        ".": "", "&": "",
    }
)  # fmt: skip
_GB_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SF_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_INVALID_KINDS_BY_DATASET = {
    "salesforce.Account": ("missing_required", "unknown_country", "negative_amount"),
    "salesforce.Contact": ("invalid_email", "missing_required", "unknown_country"),
    "salesforce.Opportunity": ("negative_amount", "unknown_currency", "bad_date"),
    "hubspot.companies": ("missing_required", "unknown_country", "negative_amount"),
    "hubspot.contacts": ("invalid_email", "missing_required", "unknown_country"),
    "hubspot.deals": ("negative_amount", "unknown_currency", "bad_date"),
    "erp.customers": ("missing_required", "unknown_country", "invalid_email"),
    "erp.products": ("negative_amount",),
    "erp.sales_orders": ("bad_date", "unknown_currency"),
    "erp.sales_order_lines": ("negative_amount",),
    "erp.invoices": ("bad_date", "negative_amount", "unknown_currency"),
    "erp.payments": ("negative_amount", "bad_date", "unknown_currency"),
    "sftp.invoices": ("bad_date", "negative_amount", "unknown_currency"),
    "sftp.payments": ("bad_date", "negative_amount", "unknown_currency"),
}


def _payment_xml(fields: list[str]) -> str:
    """One <Payment> on its own line; a malformed one lacks its last elements, as a cut CSV row does.

    Each record starts a line (the root was opened on line 1 and is closed after the last one).
    """
    values = "".join(
        f"<{name}>{escape(value)}</{name}>" for name, value in zip(PAYMENT_CSV_COLUMNS, fields, strict=False)
    )
    return f"\n<Payment>{values}</Payment>"


def _slug(text: str) -> str:
    return text.lower().translate(_FOLD)


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in accumulate(weights)]


class _SalesforceIds:
    """18-character Salesforce ids: key prefix, pod, counter in base 62, and the real case-checksum suffix."""

    def __init__(self) -> None:
        # 62**3 three-character groups and a bitmap of which of their characters are upper case.
        self.groups = ["".join(group) for group in product(_B62, repeat=3)]
        upper = [int("A" <= ch <= "Z") for ch in _B62]
        self.masks = [a | b << 1 | c << 2 for a, b, c in product(upper, repeat=3)]

    def make(self, prefix: str, n: int) -> str:
        size = 238_328  # 62 ** 3
        i0, i1, i2 = n // (size * size) % size, n // size % size, n % size
        groups, masks = self.groups, self.masks
        head = prefix + "Qy"  # 3-char key prefix and a 2-char pod, as in '001Qy...'
        m1 = 8  # only the 'Q' (4th character) of the first chunk is upper case
        m2 = masks[i0] << 1 | (masks[i1] & 1) << 4  # '0' + group 0 + first char of group 1
        m3 = masks[i1] >> 1 | masks[i2] << 2  # last two chars of group 1 + group 2
        return f"{head}0{groups[i0]}{groups[i1]}{groups[i2]}{_SF_SUFFIX[m1]}{_SF_SUFFIX[m2]}{_SF_SUFFIX[m3]}"


@lru_cache(maxsize=1)
def _salesforce_ids() -> _SalesforceIds:
    return _SalesforceIds()


@lru_cache(maxsize=1)
def _times_of_day() -> list[str]:
    return [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)]


def salesforce_id_is_valid(record_id: str) -> bool:
    """True when an 18-character id's suffix matches its first 15 characters (Salesforce's checksum)."""
    if len(record_id) != 18:
        return False
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(record_id[start : start + 5]) if "A" <= ch <= "Z")
        suffix += _SF_SUFFIX[bits]
    return suffix == record_id[15:]


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


class _Dataset:
    """Row counter of one dataset; decides deterministically which rows are made invalid."""

    __slots__ = ("deleted", "entities", "invalid", "kinds", "name", "phase", "rows")

    def __init__(self, name: str, kinds: tuple[str, ...], phase: int) -> None:
        self.name = name
        self.kinds = kinds
        self.phase = phase
        self.rows = 0
        self.invalid = 0
        self.deleted = 0
        self.entities = 0

    def next_row(self) -> str | None:
        """Count a row; return the kind of invalidity it must carry, or None."""
        k = self.rows
        self.rows = k + 1
        if (k + self.phase) % _INVALID_EVERY:
            return None
        # Cycling through the kinds makes every kind appear even in small sandboxes.
        kind = self.kinds[self.invalid % len(self.kinds)]
        self.invalid += 1
        return kind


@dataclass(slots=True)
class _Company:
    entity_id: str
    country: _Country
    brand: str  # brand and industry noun, without the legal form
    forms: tuple[str, ...]
    domain: str
    city: str
    area: str
    sub_len: int
    leads: str  # lead digits of subscriber numbers in the area
    postal: str
    street: str
    phone: str  # subscriber number of the main line (area code in ``area``)
    industry: int
    revenue: int  # whole currency units
    vat: str | None


_Person = tuple[str, str, str, str, str, str]  # entity id, first, last, e-mail, phone area, subscriber


class _Generator:
    def __init__(self, layout: SandboxLayout, contacts: int, seed: int, as_of: date) -> None:
        self.layout = layout
        self.contacts = contacts
        self.companies = max(1, contacts // 5)
        self.as_of = as_of
        self.seed = seed
        self.rng = random.Random(seed)
        self.rnd = self.rng.random
        # Salesforce Cases draw from their own stream (ids included): every other value is what it was
        # before cases existed, and they stay out of the truth table (no identity to resolve).
        self.case_rng = random.Random(f"{seed}/cases")
        self.sf_case_next = 10_000_000 + self.case_rng.randrange(50_000_000)
        self.sf_case_number = 1_000 + self.case_rng.randrange(9_000)
        # Leads (HubSpot lifecycle stages, Salesforce Leads) draw from their own stream: every other
        # value is what it was before leads existed.
        self.lead_rng = random.Random(f"{seed}/leads")
        self.lifecycle_cum = _cumulative([w for _, w in _HS_LIFECYCLE])
        self.sf_lead_next = 10_000_000 + self.lead_rng.randrange(50_000_000)
        start = as_of - timedelta(days=_WINDOW_DAYS)
        self.span = (_WINDOW_DAYS + 1) * 86400  # timestamps lie in [start 00:00, as_of + 1 day)
        # Days after as_of serve due dates and expected close dates, which are business dates.
        self.days = [(start + timedelta(days=i)).isoformat() for i in range(_WINDOW_DAYS + 400)]
        self.times = _times_of_day()
        self.today = _WINDOW_DAYS  # index of as_of in self.days
        self.ds = {
            name: _Dataset(name, _INVALID_KINDS_BY_DATASET[name], self.rng.randrange(_INVALID_EVERY))
            for name in DATASETS
        }
        self.bad_dates = (f"{as_of.year}-02-31", f"31/13/{as_of.year - 1}", "not a date")
        self.country_cum = _cumulative([c.weight for c in _COUNTRIES])
        self.presence_cum = _cumulative([w for _, w in _PRESENCE])
        self.sf_stage_cum = _cumulative([w for _, w in _SF_STAGES])
        self.sf_case_status_cum = _cumulative([w for _, w in _SF_CASE_STATUSES])
        self.hs_stage_cum = _cumulative([w for _, w in _HS_STAGES])
        self.style_cum = {k: _cumulative(v) for k, v in _PHONE_STYLE_WEIGHTS.items()}
        self.name_counters = {c.code: 0 for c in _COUNTRIES}
        self.slugs: dict[str, str] = {}
        self.sf_ids = _salesforce_ids()
        # Id counters, each starting where a long-lived org or portal could be.
        self.sf_next = {p: 10_000_000 + self.rng.randrange(50_000_000) for p in ("001", "003", "006")}
        self.hs_next = {
            "companies": 4_000_000_000 + self.rng.randrange(10**9),
            "contacts": 1_000 + self.rng.randrange(10**5),
            "deals": 9_000_000_000 + self.rng.randrange(10**9),
        }
        self.erp_next = dict.fromkeys(erp_db.ERP_TABLES, 1)
        self.bil_next = 1
        self.pay_next = 1
        self.buffers: dict[str, list[tuple[object, ...]]] = {
            t: [] for t in (*store.SALESFORCE_OBJECTS, *store.HUBSPOT_OBJECTS, *erp_db.ERP_TABLES)
        }
        self.truth_rows: list[tuple[str, str, str | None, str | None, bool]] = []
        self.products: list[tuple[int, int]] = []  # product id, list price in cents
        self.csv_lines = {"sftp.invoices": 2, "sftp.payments": 2}  # line 1 is the header
        expected_invoices = max(1, contacts // 20)
        self.bad_line_at = {
            "sftp.invoices": self.rng.randrange(max(1, expected_invoices // 2)),
            "sftp.payments": self.rng.randrange(max(1, expected_invoices // 4)),
        }
        self.last_csv_fields: dict[str, list[str]] = {}
        self.progress: Callable[[int, int], None] | None = None

    # -- small helpers -------------------------------------------------------------------------

    def pick(self, seq: Sequence[str], rnd: Callable[[], float] | None = None) -> str:
        return seq[int((rnd or self.rnd)() * len(seq))]

    def slug(self, text: str) -> str:
        value = self.slugs.get(text)
        if value is None:
            value = self.slugs[text] = _slug(text)
        return value

    def digits(self, n: int, leads: str) -> str:
        """A subscriber number: n digits, the first one of ``leads``."""
        rest = str(int(self.rnd() * 10 ** (n - 1))).zfill(n - 1) if n > 1 else ""
        return leads[int(self.rnd() * len(leads))] + rest

    def created_modified(self, not_before: int = 0) -> tuple[int, int]:
        """Creation and last modification in seconds since the window start (both before as_of + 1 day)."""
        rnd, span = self.rnd, self.span
        created = not_before + int(rnd() * (span - not_before))
        return created, created if rnd() < 0.4 else created + int(rnd() * (span - created))

    def sf_ts(self, s: int) -> str:
        return f"{self.days[s // 86400]}T{self.times[s % 86400]}.000+0000"

    def hs_ts(self, s: int) -> str:
        # Milliseconds follow from the second, so equal seconds keep created <= updated.
        return f"{self.days[s // 86400]}T{self.times[s % 86400]}.{s * 7919 % 1000:03d}Z"

    def erp_ts(self, s: int) -> str:
        return f"{self.days[s // 86400]} {self.times[s % 86400]}"

    def sf_id(self, prefix: str) -> str:
        n = self.sf_next[prefix]
        # Mostly consecutive, with the odd gap a real org has (records created and rolled back).
        self.sf_next[prefix] = n + (1 if self.rnd() < 0.95 else 2 + int(self.rnd() * 5))
        return self.sf_ids.make(prefix, n)

    def hs_id(self, object_type: str) -> int:
        n = self.hs_next[object_type]
        self.hs_next[object_type] = n + 1 + int(self.rnd() * 40)
        return n

    def erp_id(self, table: str) -> int:
        n = self.erp_next[table]
        self.erp_next[table] = n + 1
        return n

    def truth(
        self, ds: _Dataset, source_id: str, entity: str | None, reason: str | None, deleted: bool
    ) -> None:
        if deleted:
            ds.deleted += 1
        self.truth_rows.append((ds.name, source_id, entity, reason, deleted))

    # The text helpers take their own random source when another stream than the generator's main
    # one drives them (the other CRMs: their rows must not shift the main systems' data).
    def country_text(self, country: _Country, system: str, rnd: Callable[[], float] | None = None) -> str:
        rnd = rnd or self.rnd
        spellings = COUNTRY_SPELLINGS[country.code]
        name_share, code_share = _COUNTRY_SHARES[system]
        r = rnd()
        if r < name_share:
            return spellings[0]
        if r < name_share + code_share:
            return spellings[1]
        return spellings[2 + int(rnd() * (len(spellings) - 2))]

    def phone_text(
        self, country: _Country, area: str, sub: str, system: str, rnd: Callable[[], float] | None = None
    ) -> str:
        style = bisect(self.style_cum[system], (rnd or self.rnd)())
        cc = country.calling
        if cc == "1":
            ex, line = sub[:3], sub[3:]
            if style == 0:
                return f"+1 {area} {ex} {line}"
            if style == 1:
                return f"+1{area}{sub}"
            if style == 2:
                return f"({area}) {ex}-{line}"
            if style == 3:
                return f"{area}.{ex}.{line}"
            return f"+1-{area}-{ex}-{line}"
        if style == 0:
            split = 3 if len(sub) <= 7 else 4
            return f"+{cc} {area} {sub[:split]} {sub[split:]}"
        if style == 1:
            return f"+{cc}{area}{sub}"
        if style == 2:
            return f"{country.trunk}{area} {sub}"
        if style == 3:
            return f"({country.trunk}{area}) {sub[:3]}-{sub[3:]}"
        return f"00{cc} {area} {sub}"

    def typo(self, text: str, rnd: Callable[[], float] | None = None) -> str:
        """Swap, drop or double one inner character."""
        rnd = rnd or self.rnd
        if len(text) < 4:
            return text
        i = 1 + int(rnd() * (len(text) - 2))
        op = int(rnd() * 3)
        if op == 0:
            return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        if op == 1:
            return text[:i] + text[i + 1 :]
        return text[:i] + text[i] + text[i:]

    def company_name(
        self, company: _Company, upper_share: float, rnd: Callable[[], float] | None = None
    ) -> str:
        rnd = rnd or self.rnd
        forms = company.forms
        form = forms[0] if rnd() < 0.6 else forms[1 + int(rnd() * (len(forms) - 1))]
        name = f"{company.brand} {form}" if form else company.brand
        r = rnd()
        if r < upper_share:
            name = name.upper()
        elif r < upper_share + 0.04:
            name = name.lower()
        elif r < upper_share + 0.10:
            name = name.title()  # 'Nordwerk Logistik Gmbh', as typed by someone in a hurry
        if rnd() < 0.03:
            name = self.typo(name, rnd)
        return name

    def street_text(self, street: str, rnd: Callable[[], float] | None = None) -> str:
        r = (rnd or self.rnd)()
        if r < 0.15:
            for long, short in (("straße", "str."), ("Street", "St"), ("Avenue", "Ave"), ("Road", "Rd")):
                if long in street:
                    return street.replace(long, short)
        elif r < 0.2 and "straße" in street:
            return street.replace("straße", "strasse")
        return street

    @staticmethod
    def money(cents: int) -> str:
        sign = "-" if cents < 0 else ""
        cents = abs(cents)
        return f"{sign}{cents // 100}.{cents % 100:02d}"

    def hs_number(self, cents: int) -> str:
        return str(cents // 100) if cents % 100 == 0 else self.money(cents)

    def invalid_email(self, email: str) -> str:
        local, _, domain = email.partition("@")
        return (f"{local}@", f"{local}.{domain}", f"{local}@@{domain}", f"{local} @{domain}")[
            int(self.rnd() * 4)
        ]

    # -- the world -----------------------------------------------------------------------------

    def new_company(self, index: int) -> _Company:
        rnd = self.rnd
        country = _COUNTRIES[bisect(self.country_cum, rnd())]
        lang = country.language
        k = self.name_counters[country.code]
        self.name_counters[country.code] = k + 1
        n_r, n_n = len(lang.brand_roots), len(lang.nouns)
        capacity = len(lang.brand_prefixes) * n_r * n_n
        cycle, slot = divmod(k, capacity)
        # A stride co-prime with the capacity visits every combination once, in a scrambled order.
        stride = 7919 if capacity % 7919 else 7907
        p, rest = divmod((slot * stride + 13) % capacity, n_r * n_n)
        r, n = divmod(rest, n_n)
        brand = lang.brand_prefixes[p] + lang.brand_roots[r]
        noun = lang.nouns[n]
        city_name, area, sub_len, postal_prefix, leads = country.cities[int(rnd() * len(country.cities))]
        qualifier = ""
        if cycle:
            # Once every combination is used, names repeat with a place name, as firms often do.
            qualifier = " " + country.cities[(cycle - 1) % len(country.cities)][0]
            if cycle > len(country.cities):
                qualifier += f" {cycle // len(country.cities) + 1}"
        domain = f"{_slug(brand)}-{_slug(noun)}{_slug(qualifier)}.{country.tld}"
        if rnd() < 0.5:
            domain = domain.replace("-", "", 1)
        vat = None
        if country.vat:
            vat = "".join(str(int(rnd() * 10)) if ch == "D" else ch for ch in country.vat)
        return _Company(
            entity_id=f"company-{index + 1:07d}",
            country=country,
            brand=f"{brand} {noun}{qualifier}",
            forms=country.legal_forms[int(rnd() * len(country.legal_forms))],
            domain=domain,
            city=city_name,
            area=area,
            sub_len=sub_len,
            postal=self.postal_code(country, postal_prefix),
            street=self.pick(lang.streets).format(n=1 + int(rnd() * 180)),
            phone=self.digits(sub_len, leads),
            leads=leads,
            industry=int(rnd() * len(_INDUSTRIES)),
            revenue=int(10 ** (5 + rnd() * 4)) // 1000 * 1000,
            vat=vat,
        )

    def postal_code(self, country: _Country, prefix: str, rnd: Callable[[], float] | None = None) -> str:
        rnd = rnd or self.rnd
        code = country.code
        if code == "GB":
            return f"{prefix} {1 + int(rnd() * 9)}{self.pick(_GB_LETTERS, rnd)}{self.pick(_GB_LETTERS, rnd)}"
        if code == "NL":
            return (
                f"{prefix}{int(rnd() * 100):02d} {self.pick(_GB_LETTERS, rnd)}{self.pick(_GB_LETTERS, rnd)}"
            )
        if code == "SE":
            return f"{prefix} {int(rnd() * 100):02d}"
        fill = (4 if code in ("AT", "CH") else 5) - len(prefix)
        return prefix + str(int(rnd() * 10**fill)).zfill(fill)

    def new_person(self, company: _Company, index: int, pattern: int, taken: set[str]) -> _Person:
        rnd = self.rnd
        country = company.country
        first = self.pick(country.language.first_names)
        last = self.pick(country.last_names)
        f, la = self.slug(first), self.slug(last)
        if pattern == 0:
            local = f"{f}.{la}"
        elif pattern == 1:
            local = f[0] + la
        elif pattern == 2:
            local = f
        else:
            local = f"{f}_{la}"
        # One mail server never hands two people the same mailbox: namesakes get a number.
        base, n = local, 1
        while local in taken:
            n += 1
            local = f"{base}{n}"
        taken.add(local)
        if rnd() < 0.5:
            area, sub = company.area, self.digits(company.sub_len, company.leads)
        else:
            area, sub_len, leads = country.mobiles[int(rnd() * len(country.mobiles))]
            sub = self.digits(sub_len, leads)
        return f"person-{index + 1:07d}", first, last, f"{local}@{company.domain}", area, sub

    def person_mailing(self, entity_id: str, company: _Company) -> tuple[str, str, str, date]:
        """A person's mailing street, city, postal code and birth date: the same in every system.

        Drawn from the person's own stream (the world's seed and the person's id), so it shifts no
        other value and every system that holds the person starts from the same facts. Most people
        get mail at the office; about a third at home, somewhere else in the country.
        """
        rnd = random.Random(f"{self.seed}/{entity_id}").random
        if rnd() < 0.65:
            street, city, postal = company.street, company.city, company.postal
        else:
            country = company.country
            city, _area, _digits, prefix, _leads = country.cities[int(rnd() * len(country.cities))]
            street = self.pick(country.language.streets, rnd).format(n=1 + int(rnd() * 180))
            postal = self.postal_code(country, prefix, rnd)
        born = date(1950, 1, 1) + timedelta(days=int(rnd() * 365.25 * 53))
        return street, city, postal, born

    def mailing_text(
        self, entity_id: str, company: _Company, system: str, copy: int = 0
    ) -> tuple[str | None, str | None, str | None, date | None]:
        """The person's mailing address and birth date as one system holds them: some parts missing,
        streets abbreviated, postcodes without their space or in lower case, birth dates mostly unknown.

        Its own stream per person, system and copy: the system's other values do not move.
        """
        street, city, postal, born = self.person_mailing(entity_id, company)
        rnd = random.Random(f"{self.seed}/{entity_id}/{system}/{copy}").random
        street_text: str | None = self.street_text(street, rnd) if rnd() < 0.7 else None
        city_text: str | None = city if rnd() < 0.8 else None
        if city_text is not None and rnd() < 0.05:
            city_text = city_text.upper()
        postal_text: str | None = postal if rnd() < 0.7 else None
        if postal_text is not None:
            r = rnd()
            if r < 0.08:
                postal_text = postal_text.replace(" ", "")
            elif r < 0.12:
                postal_text = postal_text.lower()
            elif r < 0.15:
                postal_text = f" {postal_text} "
        return street_text, city_text, postal_text, born if rnd() < 0.35 else None

    def hs_lifecycle(self, created: int, modified: int) -> tuple[str | None, ...]:
        """A HubSpot contact's lifecycle stage, lead status and lead-stage entry dates (lead, MQL, SQL).

        From the leads' own stream. A contact in a lead stage entered the stages before it (MQL is
        skipped now and then); an opportunity or customer came through the funnel about half the time,
        else it was created at that stage and has no lead dates.
        """
        rnd = self.lead_rng.random
        stage = _HS_LIFECYCLE[min(bisect(self.lifecycle_cum, rnd()), len(_HS_LIFECYCLE) - 1)][0]
        dates: list[str | None] = [None, None, None]
        if stage in _HS_FUNNEL and (_HS_FUNNEL.index(stage) < 3 or rnd() < 0.5):
            reached = min(_HS_FUNNEL.index(stage), 2)
            at = created
            for step in range(reached + 1):
                if step == 1 and step < reached and rnd() < 0.3:
                    continue  # straight from lead to sales qualified
                dates[step] = self.hs_ts(at)
                at += int(rnd() * (modified - at) / 2)
        status = None
        if stage in _HS_LEAD_STATUSES and rnd() < 0.85:
            status = self.pick(_HS_LEAD_STATUSES[stage], rnd)
        elif stage == "opportunity" and rnd() < 0.5:
            status = "OPEN_DEAL"
        return (stage, status, *dates)

    # -- per-system rows -----------------------------------------------------------------------

    def emit_sf_account(self, company: _Company, duplicate: bool, not_before: int) -> tuple[str, int]:
        rnd = self.rnd
        ds = self.ds["salesforce.Account"]
        kind = ds.next_row()
        record_id = self.sf_id("001")
        created, modified = self.created_modified(not_before)
        name: str | None = self.company_name(company, 0.05)
        website: str | None = self.pick(_WEBSITES).format(d=company.domain)
        if rnd() < 0.15 or (duplicate and rnd() < 0.5):
            website = None
        phone: str | None = self.phone_text(company.country, company.area, company.phone, "salesforce")
        if rnd() < 0.10:
            phone = None
        country = self.country_text(company.country, "salesforce")
        revenue: float | None = float(company.revenue) if rnd() < 0.7 else None
        reason = None
        if kind == "missing_required":
            name = None
            reason = "missing_required: Name"
        elif kind == "unknown_country":
            country = self.pick(UNKNOWN_COUNTRIES)
            reason = f"unknown_country: BillingCountry={country}"
        elif kind == "negative_amount":
            revenue = -float(company.revenue)
            reason = f"negative_amount: AnnualRevenue={revenue}"
        deleted = rnd() < (0.2 if duplicate else 0.01)  # merged duplicates end up deleted
        industry = _INDUSTRIES[company.industry][0] if rnd() < 0.85 else None
        stamp = self.sf_ts(modified)
        self.buffers["Account"].append(
            (
                record_id,
                name,
                website,
                phone,
                self.street_text(company.street),
                company.city,
                company.postal,
                country,
                industry,
                revenue,
                self.sf_ts(created),
                store.SALESFORCE_INTEGRATION_USER,
                stamp,
                store.SALESFORCE_INTEGRATION_USER,
                stamp,
                int(deleted),
                # The ERP custom fields stay empty until the two-way sync fills them in.
                None,
                None,
                None,
                None,
            )
        )
        if not duplicate:
            ds.entities += 1
        self.truth(ds, record_id, company.entity_id, reason, deleted)
        return record_id, created

    def emit_hs_company(self, company: _Company, duplicate: bool, not_before: int) -> tuple[int, int]:
        rnd = self.rnd
        ds = self.ds["hubspot.companies"]
        kind = ds.next_row()
        record_id = self.hs_id("companies")
        created, modified = self.created_modified(not_before)
        name: str | None = self.company_name(company, 0.03)
        domain: str | None = company.domain if rnd() < 0.85 else f"www.{company.domain}"
        if rnd() < 0.08:
            domain = None
        phone: str | None = self.phone_text(company.country, company.area, company.phone, "hubspot")
        if rnd() < 0.15:
            phone = None
        country = self.country_text(company.country, "hubspot")
        revenue: str | None = str(company.revenue) if rnd() < 0.6 else None
        reason = None
        if kind == "missing_required":
            name = None
            reason = "missing_required: name"
        elif kind == "unknown_country":
            country = self.pick(UNKNOWN_COUNTRIES)
            reason = f"unknown_country: country={country}"
        elif kind == "negative_amount":
            revenue = f"-{company.revenue}"
            reason = f"negative_amount: annualrevenue={revenue}"
        archived = rnd() < (0.15 if duplicate else 0.01)
        created_at, updated_at = self.hs_ts(created), self.hs_ts(modified)
        industry = _INDUSTRIES[company.industry][1] if rnd() < 0.8 else None
        self.buffers["companies"].append(
            (
                record_id,
                created_at,
                updated_at,
                int(archived),
                updated_at if archived else None,
                name,
                domain,
                phone,
                self.street_text(company.street),
                company.city,
                company.postal,
                country,
                industry,
                revenue,
                created_at,
                updated_at,
                None,  # erp_customer_number: filled in by the two-way sync
            )
        )
        if not duplicate:
            ds.entities += 1
        self.truth(ds, str(record_id), company.entity_id, reason, archived)
        return record_id, created

    def contact_email(self, email: str, r: float) -> str:
        if r < 0.5:
            return email.title() if "." in email.partition("@")[0] else email.capitalize()
        return email.upper()

    def emit_sf_contact(
        self, person: _Person, company: _Company, account_id: str | None, duplicate: bool, not_before: int
    ) -> int:
        rnd = self.rnd
        ds = self.ds["salesforce.Contact"]
        kind = ds.next_row()
        entity, first, last, email, area, sub = person
        record_id = self.sf_id("003")
        created, modified = self.created_modified(not_before)
        first_name: str | None = first
        last_name: str | None = last
        r = rnd()
        if r < 0.05 and first in _NICKNAMES:
            first_name = self.pick(_NICKNAMES[first])
        elif r < 0.07:
            last_name = self.typo(last)
        elif r < 0.09:
            last_name = last.upper()
        mail: str | None = email
        r = rnd()
        if r < 0.14:
            mail = self.contact_email(email, r / 0.14 * 0.7)  # mostly 'John.Smith@Acme.De', some upper case
        elif r < 0.19:
            mail = None
        phone: str | None = self.phone_text(company.country, area, sub, "salesforce") if rnd() < 0.8 else None
        country: str | None = self.country_text(company.country, "salesforce") if rnd() < 0.6 else None
        reason = None
        if kind == "invalid_email":
            mail = self.invalid_email(email)
            reason = f"invalid_email: Email={mail}"
        elif kind == "missing_required":
            mail, last_name = None, None
            reason = "missing_required: Email, LastName"
        elif kind == "unknown_country":
            country = self.pick(UNKNOWN_COUNTRIES)
            reason = f"unknown_country: MailingCountry={country}"
        deleted = rnd() < (0.2 if duplicate else 0.01)
        title = self.pick(_TITLES) if rnd() < 0.8 else None
        street, city, postal, born = self.mailing_text(entity, company, "salesforce", int(duplicate))
        self.buffers["Contact"].append(
            (
                record_id,
                account_id,
                first_name,
                last_name,
                mail,
                phone,
                title,
                country,
                street,
                city,
                postal,
                None if born is None else born.isoformat(),
                self.sf_ts(created),
                store.SALESFORCE_INTEGRATION_USER,
                self.sf_ts(modified),
                store.SALESFORCE_INTEGRATION_USER,
                self.sf_ts(modified),
                int(deleted),
            )
        )
        if not duplicate:
            ds.entities += 1
        self.truth(ds, record_id, entity, reason, deleted)
        return created

    def emit_sf_leads(
        self, company: _Company, people: Sequence[_Person], contacts: dict[str, tuple[str, int]], in_sf: bool
    ) -> None:
        """Salesforce Leads of some of the company's people, from the leads' own stream.

        A person Salesforce holds as a Contact was often a Lead first, converted into that Contact
        (``contacts``: entity id -> (Contact id, its creation second)); the others are open, being
        worked on or closed without conversion. Companies Salesforce does not know yield fewer leads.
        """
        rnd = self.lead_rng.random
        for entity, first, last, email, area, sub in people:
            contact = contacts.get(entity)
            if rnd() >= (0.25 if contact is not None else 0.2 if in_sf else 0.08):
                continue
            n = self.sf_lead_next
            self.sf_lead_next = n + 1 + (0 if rnd() < 0.95 else int(rnd() * 5))
            record_id = self.sf_ids.make("00Q", n)
            converted = contact is not None and rnd() < 0.6
            converted_id = converted_date = None
            if contact is not None and converted:
                converted_id, converted_at = contact
                created = max(0, converted_at - int(rnd() * 90 * 86400))
                modified = converted_at
                converted_date = self.days[converted_at // 86400]
                status = "Closed - Converted"
            else:
                created = int(rnd() * self.span)
                modified = created if rnd() < 0.3 else created + int(rnd() * (self.span - created))
                r = rnd()
                status = (
                    "Open - Not Contacted"
                    if r < 0.45
                    else "Working - Contacted"
                    if r < 0.8
                    else "Closed - Not Converted"
                )
            mail: str | None = email if rnd() < 0.9 else None
            reason = None
            if mail is not None and rnd() < 0.01:
                local, _, domain = mail.partition("@")
                mail = f"{local}@@{domain}"
                reason = f"invalid_email: Email={mail}"
            deleted = rnd() < 0.01
            self.buffers["Lead"].append(
                (
                    record_id,
                    self.typo(first, rnd) if rnd() < 0.03 else first,
                    last,
                    mail,
                    self.phone_text(company.country, area, sub, "salesforce", rnd) if rnd() < 0.6 else None,
                    self.company_name(company, 0.05, rnd),
                    self.pick(_TITLES, rnd) if rnd() < 0.6 else None,
                    self.country_text(company.country, "salesforce", rnd) if rnd() < 0.7 else None,
                    status,
                    self.pick(_SF_LEAD_SOURCES, rnd) if rnd() < 0.8 else None,
                    int(converted),
                    converted_date,
                    converted_id,
                    self.sf_ts(created),
                    store.SALESFORCE_INTEGRATION_USER,
                    self.sf_ts(modified),
                    store.SALESFORCE_INTEGRATION_USER,
                    self.sf_ts(modified),
                    int(deleted),
                )
            )
            self.truth_rows.append(("salesforce.Lead", record_id, entity, reason, deleted))

    def emit_hs_contact(
        self, person: _Person, company: _Company, company_id: int | None, duplicate: bool, not_before: int
    ) -> int:
        rnd = self.rnd
        ds = self.ds["hubspot.contacts"]
        kind = ds.next_row()
        entity, first, last, email, area, sub = person
        record_id = self.hs_id("contacts")
        created, modified = self.created_modified(not_before)
        first_name: str | None = first
        last_name: str | None = last
        r = rnd()
        if r < 0.06 and first in _NICKNAMES:
            first_name = self.pick(_NICKNAMES[first])
        elif r < 0.08:
            first_name = self.typo(first)
        elif r < 0.10:
            first_name, last_name = first.lower(), last.lower()
        mail: str | None = email
        r = rnd()
        if r < 0.10:
            mail = self.contact_email(email, r / 0.10 * 0.8)
        elif r < 0.13:
            # Newsletter sign-ups with a private address.
            mail = f"{self.slug(first)}.{self.slug(last)}{int(rnd() * 100)}@{self.pick(_PRIVATE_MAIL)}"
        elif r < 0.15:
            mail = None
        phone: str | None = self.phone_text(company.country, area, sub, "hubspot") if rnd() < 0.7 else None
        country: str | None = self.country_text(company.country, "hubspot") if rnd() < 0.65 else None
        reason = None
        if kind == "invalid_email":
            mail = self.invalid_email(email)
            reason = f"invalid_email: email={mail}"
        elif kind == "missing_required":
            mail, last_name = None, None
            reason = "missing_required: email, lastname"
        elif kind == "unknown_country":
            country = self.pick(UNKNOWN_COUNTRIES)
            reason = f"unknown_country: country={country}"
        archived = rnd() < (0.15 if duplicate else 0.01)
        created_at, updated_at = self.hs_ts(created), self.hs_ts(modified)
        title = self.pick(_TITLES) if rnd() < 0.7 else None
        street, city, postal, born = self.mailing_text(entity, company, "hubspot", int(duplicate))
        # date_of_birth is a text property: most portals hold ISO dates, some what people typed.
        birth = None if born is None else born.strftime("%d.%m.%Y" if born.day % 5 == 0 else "%Y-%m-%d")
        self.buffers["contacts"].append(
            (
                record_id,
                created_at,
                updated_at,
                int(archived),
                updated_at if archived else None,
                first_name,
                last_name,
                mail,
                phone,
                title,
                country,
                street,
                city,
                postal,
                birth,
                None if company_id is None else str(company_id),
                created_at,
                updated_at,
                updated_at,  # hs_lastmodifieddate moves with lastmodifieddate
                *self.hs_lifecycle(created, modified),
            )
        )
        if not duplicate:
            ds.entities += 1
        self.truth(ds, str(record_id), entity, reason, archived)
        return created

    def deal_amount(self) -> int:
        """An amount in cents, whole currency units, skewed towards small deals."""
        return (1000 + int(self.rnd() * self.rnd() * 250_000)) * 100

    def close_day(self, closed: bool, created: int) -> int:
        if closed:
            return min(created // 86400 + int(self.rnd() * 120), self.today)
        return self.today + 1 + int(self.rnd() * 180)

    def emit_sf_opportunities(
        self, company: _Company, account_id: str, name: str, not_before: int
    ) -> list[str]:
        """Opportunities of one account; returns the ids of its Closed Won ones."""
        rnd = self.rnd
        won: list[str] = []
        r = rnd()
        ds = self.ds["salesforce.Opportunity"]
        for _ in range(0 if r < 0.2 else 1 if r < 0.8 else 2):
            kind = ds.next_row()
            record_id = self.sf_id("006")
            created, modified = self.created_modified(not_before)
            stage = _SF_STAGES[bisect(self.sf_stage_cum, rnd())][0]
            closed = stage.startswith("Closed")
            close_date = self.days[self.close_day(closed, created)]
            amount: float | None = self.deal_amount() / 100 if rnd() < 0.95 else None
            currency = company.country.currency
            reason = None
            if kind == "negative_amount":
                amount = -(amount or 5000.0)
                reason = f"negative_amount: Amount={amount}"
            elif kind == "unknown_currency":
                currency = UNKNOWN_CURRENCY
                reason = f"unknown_currency: CurrencyIsoCode={currency}"
            elif kind == "bad_date":
                close_date = self.pick(self.bad_dates)
                reason = f"bad_date: CloseDate={close_date}"
            deleted = rnd() < 0.01
            self.buffers["Opportunity"].append(
                (
                    record_id,
                    account_id,
                    f"{name} - {self.pick(_DEAL_TOPICS)}",
                    stage,
                    amount,
                    currency,
                    close_date,
                    int(closed),
                    int(stage == "Closed Won"),
                    self.sf_ts(created),
                    store.SALESFORCE_INTEGRATION_USER,
                    self.sf_ts(modified),
                    store.SALESFORCE_INTEGRATION_USER,
                    self.sf_ts(modified),
                    int(deleted),
                    None,
                    None,
                )
            )
            self.truth(ds, record_id, None, reason, deleted)
            if stage == "Closed Won" and not deleted:
                won.append(record_id)
        return won

    def emit_sf_cases(self, account_id: str, not_before: int, contacts_from: int) -> None:
        """Cases of about a third of the Salesforce accounts, raised by one of the account's contacts
        (the Contact rows buffered from ``contacts_from``); closed ones carry ClosedDate."""
        rng = self.case_rng
        if rng.random() >= 0.3:
            return
        people = [
            str(row[0])
            for row in self.buffers["Contact"][contacts_from:]
            if row[1] == account_id and not row[-1]
        ]
        for _ in range(1 + int(rng.random() * 3)):
            status = _SF_CASE_STATUSES[min(bisect(self.sf_case_status_cum, rng.random()), 3)][0]
            created = not_before + int(rng.random() * (self.span - not_before))
            closed = created + int(rng.random() * min(10 * 86400, self.span - created - 1))
            modified = (closed if status == "Closed" else created) + int(
                rng.random() * (self.span - (closed if status == "Closed" else created))
            )
            modified = min(modified, self.span - 1)
            subject, case_type, reason = _SF_CASE_TOPICS[int(rng.random() * len(_SF_CASE_TOPICS))]
            n = self.sf_case_next
            self.sf_case_next += 1 if rng.random() < 0.95 else 2 + int(rng.random() * 5)
            self.buffers["Case"].append(
                (
                    self.sf_ids.make("500", n),
                    f"{self.sf_case_number:08d}",
                    account_id,
                    people[int(rng.random() * len(people))] if people and rng.random() < 0.9 else None,
                    subject,
                    f"Customer reports: {subject.lower()}.",
                    status,
                    _SF_CASE_PRIORITIES[int(rng.random() * len(_SF_CASE_PRIORITIES))],
                    _SF_CASE_ORIGINS[int(rng.random() * len(_SF_CASE_ORIGINS))],
                    case_type,
                    reason,
                    int(status == "Closed"),
                    self.sf_ts(closed) if status == "Closed" else None,
                    self.sf_ts(created),
                    store.SALESFORCE_INTEGRATION_USER,
                    self.sf_ts(modified),
                    store.SALESFORCE_INTEGRATION_USER,
                    self.sf_ts(modified),
                    int(rng.random() < 0.01),
                )
            )
            self.sf_case_number += 1

    def emit_hs_deals(self, company: _Company, company_id: int, name: str, not_before: int) -> None:
        rnd = self.rnd
        r = rnd()
        ds = self.ds["hubspot.deals"]
        for _ in range(0 if r < 0.2 else 1 if r < 0.8 else 2):
            kind = ds.next_row()
            record_id = self.hs_id("deals")
            created, modified = self.created_modified(not_before)
            stage = _HS_STAGES[bisect(self.hs_stage_cum, rnd())][0]
            day = self.close_day(stage.startswith("closed"), created)
            close_date = self.hs_ts(day * 86400 + int(rnd() * 86400))
            cents = self.deal_amount()
            amount: str | None = self.hs_number(cents) if rnd() < 0.92 else None
            currency = company.country.currency
            reason = None
            if kind == "negative_amount":
                amount = f"-{self.hs_number(cents)}"
                reason = f"negative_amount: amount={amount}"
            elif kind == "unknown_currency":
                currency = UNKNOWN_CURRENCY
                reason = f"unknown_currency: deal_currency_code={currency}"
            elif kind == "bad_date":
                close_date = self.pick(self.bad_dates)
                reason = f"bad_date: closedate={close_date}"
            archived = rnd() < 0.01
            created_at, updated_at = self.hs_ts(created), self.hs_ts(modified)
            self.buffers["deals"].append(
                (
                    record_id,
                    created_at,
                    updated_at,
                    int(archived),
                    updated_at if archived else None,
                    f"{name} - {self.pick(_DEAL_TOPICS)}",
                    amount,
                    currency,
                    stage,
                    "default",
                    close_date,
                    created_at,
                    updated_at,
                    None,  # erp_order_number
                    None,  # erp_invoice_numbers
                    None,  # dynamics_opportunity_id
                    company_id,
                )
            )
            self.truth(ds, str(record_id), None, reason, archived)

    def emit_erp_customer(self, company: _Company, duplicate: bool) -> tuple[int, str, int]:
        rnd = self.rnd
        ds = self.ds["erp.customers"]
        kind = ds.next_row()
        customer_id = self.erp_id("customers")
        code = f"C{100000 + customer_id}"
        created, modified = self.created_modified()
        name: str | None = self.company_name(company, 0.3)  # legacy ERPs love upper case
        vat = company.vat
        if vat is not None:
            r = rnd()
            if r < 0.25:
                vat = None
            elif r < 0.35:
                vat = " ".join(vat[i : i + 3] for i in range(0, len(vat), 3))
            elif r < 0.40:
                vat = vat.lower()
        mailbox = self.pick(_AP_MAILBOXES)
        email: str | None = f"{mailbox}@{company.domain}" if rnd() < 0.8 else None
        phone: str | None = self.phone_text(company.country, company.area, company.phone, "erp")
        if rnd() < 0.1:
            phone = None
        country = self.country_text(company.country, "erp")
        reason = None
        if kind == "missing_required":
            name = None
            reason = "missing_required: name"
        elif kind == "unknown_country":
            country = self.pick(UNKNOWN_COUNTRIES)
            reason = f"unknown_country: country={country}"
        elif kind == "invalid_email":
            email = self.invalid_email(f"{mailbox}@{company.domain}")
            reason = f"invalid_email: email={email}"
        self.buffers["customers"].append(
            (
                customer_id,
                code,
                name,
                vat,
                email,
                phone,
                self.street_text(company.street),
                company.city,
                company.postal,
                country,
                self.erp_ts(created),
                self.erp_ts(modified),
            )
        )
        if not duplicate:
            ds.entities += 1
        self.truth(ds, str(customer_id), company.entity_id, reason, False)
        return customer_id, code, created

    def opportunity_reference(self, sf_id: str) -> str:
        """A Salesforce opportunity id as people store it in an ERP: bare, short, prefixed, lower case.

        Chosen from the id itself, so the generator's random stream (and so the rest of the data) is
        the same whichever format an id gets.
        """
        r = int(hashlib.sha256(sf_id.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
        if r < 0.4:
            return sf_id
        if r < 0.6:
            return sf_id[:15]
        if r < 0.75:
            return f"SF-{sf_id[:15]}"
        if r < 0.9:
            return f"salesforce:{sf_id}"
        return sf_id.lower()

    def emit_erp_orders(self, company: _Company, customer_id: int, since: int, won: list[str]) -> None:
        rnd = self.rnd
        currency = company.country.currency
        ds = self.ds["erp.sales_orders"]
        for o in range(int(rnd() * 5)):
            kind = ds.next_row()
            order_id = self.erp_id("sales_orders")
            created = since + int(rnd() * (self.span - since))
            order_day = created // 86400
            order_date = self.days[order_day]
            age_days = self.today - order_day
            r = rnd()
            if r < 0.05:
                status = "cancelled"
            elif age_days < 10 or r < 0.25:
                status = "open"
            elif age_days < 30 or r < 0.45:
                status = "shipped"
            else:
                status = "invoiced"
            # Orders that came from a won Salesforce opportunity carry its id, typed the way whoever
            # made the order typed it (the order-to-cash sync must recognise every one).
            ref = self.opportunity_reference(won[o]) if o < len(won) and rnd() < 0.8 else None
            order_currency = currency
            reason = None
            if kind == "bad_date":
                order_date = self.pick(self.bad_dates)
                reason = f"bad_date: order_date={order_date}"
            elif kind == "unknown_currency":
                order_currency = UNKNOWN_CURRENCY
                reason = f"unknown_currency: currency={order_currency}"
            modified = created + int(rnd() * (self.span - created))
            self.buffers["sales_orders"].append(
                (
                    order_id,
                    f"SO-{order_id:07d}",
                    customer_id,
                    order_date,
                    order_currency,
                    status,
                    ref,
                    self.erp_ts(modified),
                )
            )
            self.truth(ds, str(order_id), None, reason, False)
            net = self.emit_erp_lines(order_id, modified)
            if status == "invoiced" or (status == "shipped" and rnd() < 0.6):
                self.emit_erp_invoice(company, customer_id, order_id, order_day, net, order_currency)

    def emit_erp_lines(self, order_id: int, modified: int) -> int:
        rnd = self.rnd
        ds = self.ds["erp.sales_order_lines"]
        stamp = self.erp_ts(modified)
        total = 0
        for line_no in range(1, 2 + int(rnd() * 5)):
            kind = ds.next_row()
            line_id = self.erp_id("sales_order_lines")
            product_id, list_price = self.products[int(rnd() * len(self.products))]
            quantity = 1 + int(rnd() * rnd() * 50)
            unit = list_price * (100 - int(rnd() * 20)) // 100
            amount = quantity * unit
            reason = None
            if kind == "negative_amount":
                unit, amount = -unit, -amount
                reason = f"negative_amount: line_amount={self.money(amount)}"
            total += amount
            self.buffers["sales_order_lines"].append(
                (
                    line_id,
                    order_id,
                    line_no,
                    product_id,
                    quantity,
                    self.money(unit),
                    self.money(amount),
                    stamp,
                )
            )
            self.truth(ds, str(line_id), None, reason, False)
        return total

    def emit_erp_invoice(
        self, company: _Company, customer_id: int, order_id: int, order_day: int, net: int, currency: str
    ) -> None:
        rnd = self.rnd
        ds = self.ds["erp.invoices"]
        kind = ds.next_row()
        invoice_id = self.erp_id("invoices")
        number = f"INV-{invoice_id:07d}"
        day = min(order_day + int(rnd() * 15), self.today)
        tax = round(net * company.country.tax_rate)
        gross = net + tax
        r = rnd()
        status = "cancelled" if r < 0.02 else "paid" if self.today - day > 30 and r < 0.87 else "open"
        invoice_date, due_date = self.days[day], self.days[day + 30]
        shown_net, shown_tax, shown_gross = net, tax, gross
        reason = None
        if kind == "bad_date":
            invoice_date = self.pick(self.bad_dates)
            reason = f"bad_date: invoice_date={invoice_date}"
        elif kind == "negative_amount":
            shown_net, shown_tax, shown_gross = -net, -tax, -gross
            reason = f"negative_amount: amount_gross={self.money(-gross)}"
        elif kind == "unknown_currency":
            currency = UNKNOWN_CURRENCY
            reason = f"unknown_currency: currency={currency}"
        updated = day * 86400 + int(rnd() * 86400)
        paid_day = min(day + 5 + int(rnd() * 40), self.today)
        if status == "paid":
            updated = max(updated, paid_day * 86400 + int(rnd() * 86400))
        self.buffers["invoices"].append(
            (
                invoice_id,
                number,
                customer_id,
                order_id,
                invoice_date,
                due_date,
                currency,
                self.money(shown_net),
                self.money(shown_tax),
                self.money(shown_gross),
                status,
                self.erp_ts(updated),
            )
        )
        self.truth(ds, str(invoice_id), None, reason, False)
        if status == "paid":
            parts = [gross // 2, gross - gross // 2] if rnd() < 0.1 and gross > 200 else [gross]
            for i, part in enumerate(parts):
                self.emit_erp_payment(
                    invoice_id, max(day, paid_day - (len(parts) - 1 - i) * 3), part, currency
                )
        elif status == "open" and rnd() < 0.3:
            # The billing system reports today's payment before the ERP has booked it.
            self.emit_csv_payment(number, gross, currency)

    def emit_erp_payment(self, invoice_id: int, day: int, cents: int, currency: str) -> None:
        ds = self.ds["erp.payments"]
        kind = ds.next_row()
        payment_id = self.erp_id("payments")
        payment_date = self.days[day]
        reason = None
        if kind == "negative_amount":
            cents = -cents
            reason = f"negative_amount: amount={self.money(cents)}"
        elif kind == "bad_date":
            payment_date = self.pick(self.bad_dates)
            reason = f"bad_date: payment_date={payment_date}"
        elif kind == "unknown_currency":
            currency = UNKNOWN_CURRENCY
            reason = f"unknown_currency: currency={currency}"
        self.buffers["payments"].append(
            (
                payment_id,
                invoice_id,
                payment_date,
                self.money(cents),
                currency,
                self.pick(_PAYMENT_METHODS),
                self.erp_ts(day * 86400 + int(self.rnd() * 86400)),
            )
        )
        self.truth(ds, str(payment_id), None, reason, False)

    # -- the SFTP finance drop -----------------------------------------------------------------

    def next_csv_kind(self, dataset: str) -> str | None:
        ds = self.ds[dataset]
        k = ds.rows
        if (k + ds.phase) % _INVALID_EVERY:
            return None
        return ds.kinds[(k // _INVALID_EVERY) % len(ds.kinds)]

    def csv_row(self, dataset: str, fields: list[str], reason: str | None) -> None:
        """Write one data row, or the file's one malformed line when its turn has come."""
        ds = self.ds[dataset]
        if ds.rows == self.bad_line_at[dataset]:
            fields, reason = self.malformed(fields)
        line = self.csv_lines[dataset]
        self.csv_lines[dataset] = line + 1
        ds.rows += 1
        if reason is not None:
            ds.invalid += 1
        if dataset == "sftp.payments":
            self.files[dataset].write(_payment_xml(fields))
        else:
            self.files[dataset].write(",".join(fields) + "\n")
        self.truth(ds, str(line), None, reason, False)
        self.last_csv_fields[dataset] = fields

    @staticmethod
    def malformed(fields: list[str]) -> tuple[list[str], str]:
        expected = len(fields)
        at = 7 if expected == len(INVOICE_CSV_COLUMNS) else 3  # amount_gross / amount
        amount = fields[at]
        # An XML payment cannot grow a field from a comma: it loses its last element instead.
        if at == 7 and len(amount.split(".")[0].lstrip("-")) > 3:
            # A thousands separator in an unquoted amount: the classic extra field.
            fields = [*fields[:at], f"{amount[:-6]},{amount[-6:]}", *fields[at + 1 :]]
        else:
            fields = fields[:-1]
        count = len(",".join(fields).split(","))
        return fields, f"wrong_field_count: {count} fields, expected {expected}"

    def emit_bil_invoice(self, company: _Company, code: str) -> None:
        rnd = self.rnd
        kind = self.next_csv_kind("sftp.invoices")
        number = f"BIL-{self.as_of:%Y%m%d}-{self.bil_next:06d}"
        self.bil_next += 1
        net = (20 + int(rnd() * rnd() * 20_000)) * 100 + int(rnd() * 100)
        tax = round(net * company.country.tax_rate)
        gross = net + tax
        currency = company.country.currency
        invoice_date, due_date = self.days[self.today], self.days[self.today + 30]
        r = rnd()
        status = "cancelled" if r < 0.03 else "paid" if r < 0.23 else "open"
        amounts = [self.money(net), self.money(tax), self.money(gross)]
        reason = None
        if kind == "bad_date":
            invoice_date = self.pick(self.bad_dates)
            reason = f"bad_date: invoice_date={invoice_date}"
        elif kind == "negative_amount":
            amounts = [self.money(-net), self.money(-tax), self.money(-gross)]
            reason = f"negative_amount: amount_gross={amounts[2]}"
        elif kind == "unknown_currency":
            currency = UNKNOWN_CURRENCY
            reason = f"unknown_currency: currency={currency}"
        self.csv_row(
            "sftp.invoices", [number, code, invoice_date, due_date, currency, *amounts, status], reason
        )
        if status == "paid":
            self.emit_csv_payment(number, gross, company.country.currency)

    def emit_csv_payment(self, invoice_number: str, cents: int, currency: str) -> None:
        kind = self.next_csv_kind("sftp.payments")
        reference = f"PMT-{self.as_of:%Y%m%d}-{self.pay_next:06d}"
        self.pay_next += 1
        payment_date = self.days[self.today]
        reason = None
        if kind == "bad_date":
            payment_date = self.pick(self.bad_dates)
            reason = f"bad_date: payment_date={payment_date}"
        elif kind == "negative_amount":
            cents = -cents
            reason = f"negative_amount: amount={self.money(cents)}"
        elif kind == "unknown_currency":
            currency = UNKNOWN_CURRENCY
            reason = f"unknown_currency: currency={currency}"
        method = self.pick(_PAYMENT_METHODS)
        self.csv_row(
            "sftp.payments",
            [reference, invoice_number, payment_date, self.money(cents), currency, method],
            reason,
        )

    def finish_csv(self) -> None:
        # Small sandboxes can end before the malformed line's turn: it then comes last.
        for dataset in ("sftp.invoices", "sftp.payments"):
            if self.ds[dataset].rows <= self.bad_line_at[dataset] and dataset in self.last_csv_fields:
                self.bad_line_at[dataset] = self.ds[dataset].rows
                self.csv_row(dataset, list(self.last_csv_fields[dataset]), None)

    # -- orchestration -------------------------------------------------------------------------

    def emit_products(self) -> None:
        ds = self.ds["erp.products"]
        names = [f"{a} {n}" for n in _PRODUCT_NOUNS for a in _PRODUCT_ADJECTIVES]
        for i in range(200):
            kind = ds.next_row()
            product_id = self.erp_id("products")
            cents = int(10 ** (2.7 + self.rnd() * 3)) // 5 * 5
            self.products.append((product_id, cents))
            reason = None
            if kind == "negative_amount":
                cents = -cents
                reason = f"negative_amount: unit_price={self.money(cents)}"
            name = f"{names[i % len(names)]} {chr(65 + i // len(names))}{100 + i}"
            updated = self.erp_ts(int(self.rnd() * self.span))
            self.buffers["products"].append(
                (product_id, f"SKU-{10000 + i}", name, self.money(cents), updated)
            )
            self.truth(ds, str(product_id), None, reason, False)

    def run(self) -> None:
        rnd = self.rnd
        people_done = 0
        for index in range(self.companies):
            company = self.new_company(index)
            in_sf, in_hs, in_erp = _PRESENCE[bisect(self.presence_cum, rnd())][0]
            # 1-9 people per company, staying within 10 of the even share so the total comes out exact.
            ideal = (index + 1) * self.contacts // self.companies
            if index == self.companies - 1:
                n_people = self.contacts - people_done
            else:
                n_people = max(1, min(1 + int(rnd() * 9), ideal - people_done), ideal - 10 - people_done)
            account_id, hs_company_id = None, None
            sf_created = hs_created = 0
            won: list[str] = []
            if in_sf:
                account_id, sf_created = self.emit_sf_account(company, False, 0)
                won = self.emit_sf_opportunities(
                    company, account_id, self.company_name(company, 0.0), sf_created
                )
                if rnd() < 0.02:
                    self.emit_sf_account(company, True, sf_created)
            if in_hs:
                hs_company_id, hs_created = self.emit_hs_company(company, False, 0)
                self.emit_hs_deals(company, hs_company_id, self.company_name(company, 0.0), hs_created)
                if rnd() < 0.02:
                    self.emit_hs_company(company, True, hs_created)
            if in_erp:
                customer_id, code, since = self.emit_erp_customer(company, False)
                self.emit_erp_orders(company, customer_id, since, won)
                if rnd() < 0.5:
                    self.emit_bil_invoice(company, code)
                if rnd() < 0.01:
                    self.emit_erp_customer(company, True)
            sf_contacts_from = len(self.buffers["Contact"])
            pattern = min(bisect((0.6, 0.8, 0.9), rnd()), 3)  # the company's e-mail address scheme
            mailboxes: set[str] = set()
            people: list[_Person] = []
            sf_contacts: dict[str, tuple[str, int]] = {}  # entity id -> its Contact's id and creation
            for p in range(n_people):
                person = self.new_person(company, people_done + p, pattern, mailboxes)
                people.append(person)
                r = rnd()
                if in_sf and in_hs:
                    to_sf, to_hs = r < 0.7, r >= 0.3
                elif in_sf:
                    to_sf, to_hs = True, r < 0.1
                elif in_hs:
                    to_sf, to_hs = r < 0.05, True
                else:  # ERP-only company: its people live in the CRMs without a company link
                    to_sf, to_hs = r < 0.15, r >= 0.15
                if to_sf:
                    created = self.emit_sf_contact(person, company, account_id, False, sf_created)
                    sf_contacts[person[0]] = (str(self.buffers["Contact"][-1][0]), created)
                    if rnd() < 0.03:
                        self.emit_sf_contact(
                            person, company, account_id if rnd() < 0.7 else None, True, created
                        )
                if to_hs:
                    created = self.emit_hs_contact(person, company, hs_company_id, False, hs_created)
                    if rnd() < 0.03:
                        self.emit_hs_contact(
                            person, company, hs_company_id if rnd() < 0.5 else None, True, created
                        )
            if self.others is not None:
                self.others.company(company, people)
            if account_id is not None:
                self.emit_sf_cases(account_id, sf_created, sf_contacts_from)
            self.emit_sf_leads(company, people, sf_contacts, in_sf)
            people_done += n_people
            if (index + 1) % _BATCH_COMPANIES == 0:
                self.flush()
                if self.progress is not None:
                    self.progress(index + 1, self.companies)
        self.finish_csv()
        self.flush()

    def flush(self) -> None:
        """Hand the buffered rows to the sink and start new buffers."""
        if self.others is not None:
            self.truth_rows.extend(self.others.flush())
        batch = {table: rows for table, rows in self.buffers.items() if rows}
        self.sink.write(batch, self.truth_rows)
        self.buffers = {table: [] for table in self.buffers}
        self.truth_rows = []

    def summary(self) -> dict[str, object]:
        return {
            "as_of": self.as_of.isoformat(),
            "contacts": self.contacts,
            "true_companies": self.companies,
            "true_people": self.contacts,
            "files": {
                "invoices": self.layout.invoices_file(self.as_of)
                .relative_to(self.layout.sftp_root)
                .as_posix(),
                "payments": self.layout.payments_file(self.as_of)
                .relative_to(self.layout.sftp_root)
                .as_posix(),
            },
            "datasets": {
                name: {"rows": ds.rows, "invalid": ds.invalid, "deleted": ds.deleted, "entities": ds.entities}
                for name, ds in self.ds.items()
            },
        }

    # Attached by generate_sandbox once the files are open.
    sink: _Sink | _SinkProcess
    files: dict[str, IO[str]]
    others: OtherCrmSeeder | None = None


_Batch = dict[str, list[tuple[object, ...]]]
_TruthRows = list[tuple[str, str, str | None, str | None, bool]]
# From this size on, a writer process inserts while the generator carries on (Python's GIL
# would serialise a writer thread); smaller sandboxes are not worth a process start.
_WRITER_PROCESS_FROM = 200_000


class _Sink:
    """Inserts batches into the three databases and appends truth rows, in the order received."""

    def __init__(self, layout: SandboxLayout) -> None:
        self.layout = layout
        self.sf = _bulk_connection(layout.salesforce_store)
        self.hs = _bulk_connection(layout.hubspot_store)
        self.erp = _bulk_connection(layout.erp_db)
        self.targets = {
            **{t: (self.sf, _insert_sql(t, store.salesforce_columns(t))) for t in store.SALESFORCE_OBJECTS},
            **{t: (self.hs, _insert_sql(t, store.hubspot_columns(t))) for t in store.HUBSPOT_OBJECTS},
            **{t: (self.erp, erp_db.insert_sql(t)) for t in erp_db.ERP_TABLES},
        }
        self.truth = pq.ParquetWriter(layout.truth, TRUTH_SCHEMA, compression="zstd")

    def write(self, batch: _Batch, truth_rows: _TruthRows) -> None:
        for table, rows in batch.items():
            conn, sql = self.targets[table]
            conn.executemany(sql, rows)
        for conn in (self.sf, self.hs, self.erp):
            conn.commit()
        if truth_rows:
            columns = list(zip(*truth_rows, strict=True))
            arrays = [pa.array(c, type=f.type) for c, f in zip(columns, TRUTH_SCHEMA, strict=True)]
            self.truth.write_table(pa.Table.from_arrays(arrays, schema=TRUTH_SCHEMA))

    def close(self, *, complete: bool = True) -> None:
        self.truth.close()
        if complete:
            store.create_indexes(self.sf)
            store.create_indexes(self.hs)
            erp_db.create_erp_indexes(self.erp)
        for conn in (self.sf, self.hs, self.erp):
            conn.close()


def _sink_process_main(layout: SandboxLayout, receiver: Connection) -> None:
    """Body of the writer process: apply the batches in order until ``None`` arrives."""
    sink = _Sink(layout)
    complete = False
    try:
        while True:
            try:
                message = receiver.recv()
            except EOFError:  # the generator failed and hung up: leave the files unfinished
                break
            if message is None:
                complete = True
                break
            sink.write(*message)
    finally:
        sink.close(complete=complete)


class _SinkProcess:
    """A :class:`_Sink` in a spawned process, fed through a pipe (which also bounds memory)."""

    def __init__(self, layout: SandboxLayout) -> None:
        context = multiprocessing.get_context("spawn")
        receiver, self.sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_sink_process_main, args=(layout, receiver), name="sandbox-writer", daemon=True
        )
        self.process.start()
        receiver.close()

    def write(self, batch: _Batch, truth_rows: _TruthRows) -> None:
        try:
            self.sender.send((batch, truth_rows))
        except (BrokenPipeError, EOFError, OSError) as exc:
            self.process.join()
            raise RuntimeError(f"sandbox writer process died (exit code {self.process.exitcode})") from exc

    def close(self, *, complete: bool = True) -> None:
        try:
            if complete:
                self.sender.send(None)
        except (BrokenPipeError, EOFError, OSError):
            pass
        self.sender.close()  # without the final None the writer stops on EOF and skips the indexes
        self.process.join()
        if complete and self.process.exitcode != 0:
            raise RuntimeError(f"sandbox writer process failed (exit code {self.process.exitcode})")


def _bulk_connection(path: Path) -> sqlite3.Connection:
    # A half-written sandbox is regenerated from scratch, so the bulk load needs no journal or fsync.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -16384")
    return conn


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in columns)})'


def generate_sandbox(
    root: Path,
    *,
    contacts: int = 2000,
    seed: int = 42,
    as_of: date,
    progress: Callable[[int, int], None] | None = None,
    writer_process: bool | None = None,
) -> SandboxLayout:
    """Generate the sandbox's systems and truth under ``root``, replacing an earlier sandbox there.

    ``progress``, when given, is called after each batch with (companies done, companies in total).
    ``writer_process`` runs the database writes in a spawned process (default: from 200k contacts);
    the files are the same either way. Like any code that starts processes, a script calling this
    with it on needs the usual ``if __name__ == "__main__":`` guard.
    """
    if contacts < 1:
        raise ValueError("contacts must be at least 1")
    layout = SandboxLayout.under(Path(root))
    layout.finance_dir.mkdir(parents=True, exist_ok=True)
    for path in (
        layout.salesforce_store,
        layout.hubspot_store,
        layout.erp_db,
        layout.truth,
        layout.truth_summary,
        layout.invoices_file(as_of),
        layout.payments_file(as_of),
    ):
        path.unlink(missing_ok=True)
    store.create_salesforce_store(layout.salesforce_store).close()
    store.create_hubspot_store(layout.hubspot_store).close()
    erp_db.create_erp_db(layout.erp_db).close()

    gen = _Generator(layout, contacts, seed, as_of)
    gen.progress = progress
    gen.others = OtherCrmSeeder(
        layout.crm_dir, style=gen, industries=_INDUSTRIES, seed=seed, as_of=as_of, window_days=_WINDOW_DAYS
    )
    if writer_process is None:
        writer_process = contacts >= _WRITER_PROCESS_FROM
    gen.sink = _SinkProcess(layout) if writer_process else _Sink(layout)
    invoices = layout.invoices_file(as_of).open("w", encoding="utf-8", newline="")
    payments = layout.payments_file(as_of).open("w", encoding="utf-8", newline="")
    gen.files = {"sftp.invoices": invoices, "sftp.payments": payments}
    complete = False
    try:
        invoices.write(",".join(INVOICE_CSV_COLUMNS) + "\n")
        payments.write('<?xml version="1.0" encoding="UTF-8"?><Payments>')
        gen.emit_products()
        gen.run()
        complete = True
    finally:
        payments.write("</Payments>\n")
        invoices.close()
        payments.close()
        gen.sink.close(complete=complete)
        gen.others.close()
    summary = gen.summary()
    summary["other_crms"] = gen.others.summary()
    summary["seed"] = seed
    layout.truth_summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return layout
