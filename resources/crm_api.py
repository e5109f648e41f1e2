"""Dagster resource that reads a declared CRM system through the connector engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field

from crm_pipelines.connectors.engine import (
    ConnectionCheck,
    ConnectionSettings,
    ExtractStats,
    PageInfo,
    SchemaDrift,
    UpsertResult,
    check_connection,
    extract_keys,
    extract_object,
    key_schema,
    output_schema,
    update_records,
    upsert_records,
)
from crm_pipelines.connectors.spec import SystemSpec, load_system
from crm_pipelines.connectors.writes import WriteStats


class CrmApiResource(dg.ConfigurableResource["CrmApiResource"]):
    """Connection to one declared CRM system (``salesforce``, ``hubspot``, ``dynamics``, ...).

    The system's endpoints, auth kind, paging, limits and fields come from
    ``crm_pipelines/connectors/systems/<system>.yaml``; this resource only carries where to connect
    and the credential the auth kind needs (the YAML names its environment variables, and
    ``definitions.py`` wires them with ``dg.EnvVar`` so secrets never sit in code or run config, e.g.
    ``CrmApiResource(system="hubspot", base_url=dg.EnvVar("HUBSPOT_BASE_URL"),
    access_token=dg.EnvVar("HUBSPOT_ACCESS_TOKEN"))``). Secrets are left out of the resource's repr.

    Nothing connects until :meth:`extract`, :meth:`upsert` or :meth:`check` is called.
    """

    system: str = Field(description="System name: the YAML file's stem under connectors/systems.")
    base_url: str = Field(description="API base URL (Salesforce: login or My Domain URL).")
    token_url: str | None = Field(
        default=None, description="Absolute token endpoint (Entra ID for Dynamics, Zoho's accounts server)."
    )
    client_id: str | None = Field(default=None, repr=False, description="OAuth client id.")
    client_secret: str | None = Field(default=None, repr=False, description="OAuth client secret.")
    access_token: str | None = Field(
        default=None, repr=False, description="Static token or API key (HubSpot private app, Pipedrive)."
    )
    refresh_token: str | None = Field(default=None, repr=False, description="OAuth refresh token (Zoho).")
    username: str | None = Field(
        default=None, description="User of a password grant, Basic or session login."
    )
    password: str | None = Field(default=None, repr=False, description="That user's password.")
    company: str | None = Field(default=None, description="Company database (SAP Business One CompanyDB).")
    page_size: int | None = Field(default=None, description="Records per page; default: the system's.")
    timeout_seconds: float | None = Field(
        default=None, description="Per-request timeout; default: the system's."
    )

    def spec(self) -> SystemSpec:
        """The validated system declaration.

        Returns:
            The system spec.
        """
        return load_system(name=self.system)

    def connection(self) -> ConnectionSettings:
        """Connection settings for the engine (secrets wrapped so they do not print).

        Returns:
            The settings.
        """
        return ConnectionSettings(
            base_url=self.base_url,
            token_url=self.token_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            username=self.username,
            password=self.password,
            company=self.company,
            timeout_seconds=self.timeout_seconds,
        )

    def output_schema(self, *, object_name: str) -> pa.Schema:
        """Arrow schema of ``object_name``'s batches.

        Args:
            object_name: A declared object.

        Returns:
            Declared fields as strings plus ``_extracted_at``.
        """
        return output_schema(system=self.spec(), object_name=object_name)

    def extract(
        self,
        *,
        object_name: str,
        since: datetime | None,
        until: datetime | None,
        drift: SchemaDrift | None = None,
        on_page: Callable[[PageInfo], None] | None = None,
        include_deleted: bool = True,
        stats: ExtractStats | None = None,
        delta_link: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream ``object_name`` records with ``since <= cursor < until`` as Arrow batches.

        Args:
            object_name: A declared object, e.g. ``"Contact"`` or ``"deals"``.
            since: Inclusive lower bound, or ``None`` for everything.
            until: Exclusive upper bound, or ``None`` for up to now.
            drift: Filled with schema drift once the iterator is exhausted.
            on_page: Progress callback after each page.
            include_deleted: Also read deleted records (they come with ``_deleted`` true).
            stats: Filled with the method used (REST, Bulk job, search, delta), rows, the highest
                cursor and the delta link a change-tracked read ended with.
            delta_link: For change-tracked objects: where the last read ended (None: start over).

        Returns:
            An iterator of record batches.
        """
        return extract_object(
            system=self.spec(),
            object_name=object_name,
            connection=self.connection(),
            since=since,
            until=until,
            page_size=self.page_size,
            on_page=on_page,
            drift=drift,
            include_deleted=include_deleted,
            stats=stats,
            delta_link=delta_link,
        )

    def key_schema(self, *, object_name: str) -> pa.Schema:
        """Arrow schema of :meth:`extract_keys` batches (the primary key column)."""
        return key_schema(system=self.spec(), object_name=object_name)

    def extract_keys(
        self, *, object_name: str, stats: ExtractStats | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream every live key of ``object_name`` (``deletes: key_compare``).

        Args:
            object_name: A declared object.
            stats: Filled with the requests made and keys read.

        Returns:
            Batches with the primary key column.
        """
        return extract_keys(
            system=self.spec(),
            object_name=object_name,
            connection=self.connection(),
            page_size=self.page_size,
            stats=stats,
        )

    def upsert(
        self,
        *,
        object_name: str,
        external_id_field: str,
        records: Iterable[Mapping[str, Any]],
        stats: WriteStats | None = None,
    ) -> list[UpsertResult]:
        """Create or update records by external id, batched and rate limited; one result per record.

        Args:
            object_name: A declared object with an ``upsert`` declaration.
            external_id_field: Salesforce external id field or HubSpot unique property to match on.
            records: Field name to value per record, each carrying ``external_id_field``.
            stats: Filled with the requests sent.

        Returns:
            Created, updated or rejected (with the system's code and reason) per record, in order.
        """
        return upsert_records(
            system=self.spec(),
            object_name=object_name,
            connection=self.connection(),
            external_id_field=external_id_field,
            records=records,
            stats=stats,
        )

    def update(
        self, *, object_name: str, records: Iterable[Mapping[str, Any]], stats: WriteStats | None = None
    ) -> list[UpsertResult]:
        """Update existing records by their id; one result per record (nothing is created).

        Args:
            object_name: A declared object with an ``update`` declaration.
            records: Field name to value per record, each carrying the object's primary key.
            stats: Filled with the requests sent.

        Returns:
            Updated or rejected (with the system's code and reason) per record, in order.
        """
        return update_records(
            system=self.spec(),
            object_name=object_name,
            connection=self.connection(),
            records=records,
            stats=stats,
        )

    def check(self) -> ConnectionCheck:
        """Reachability and authentication check for ``doctor``.

        Returns:
            The outcome, with what to fix when something is wrong.
        """
        return check_connection(system=self.spec(), connection=self.connection())
