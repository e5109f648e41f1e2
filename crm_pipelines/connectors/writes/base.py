"""What every upsert style is and shares: its declaration model, outcomes, reading answers.

An upsert style is an :class:`UpsertModel` (what ``upsert:`` declares) registered in
:data:`UPSERT_STYLES` under its ``style``; :meth:`UpsertModel.upsert_batch` sends one batch and
answers one :data:`Outcome` per record, in order.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field

from crm_pipelines.connectors.error_bodies import describe_error_body
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import Session, render_value
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.registry import DeclarationRegistry

__all__ = [
    "NO_RESULT",
    "UPSERT_STYLES",
    "Batch",
    "Outcome",
    "UpsertModel",
    "external_id",
    "outcome_of",
    "raise_for",
    "text_at",
    "upsert_path",
]


class UpsertModel(SpecModel):
    """What every ``upsert:`` declaration has: its style, where to send, how many per batch, what to retry."""

    style: str
    path: str = Field(description="Request path; {object} and {id_field} are filled in.")
    batch_size: int = Field(default=100, gt=0)
    retryable_errors: list[str] = Field(
        default_factory=list, description="Per-record error codes worth another attempt."
    )
    max_attempts: int = Field(default=3, ge=1)
    replaces_whole: list[str] = Field(
        default_factory=list,
        description=(
            "Objects of a record the API replaces whole when any member is sent (Pipedrive's "
            "address): a write of one member carries the others as the record holds them."
        ),
    )

    def field_key(self, path: str) -> str:
        """Where a field read at ``path`` goes in a record given to this style (default: the same)."""
        return path

    def carried_fields(self) -> list[str]:
        """Fields a record must carry, besides its key, for the style to address it (a parent's key)."""
        return []

    @abstractmethod
    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """Send one batch; one outcome per record, in order.

        An ApiRequestError with status 400 means the batch was refused as a whole: the caller splits
        it until the bad records stand alone.

        Args:
            session: The conversation with the system.
            batch: The records and what they are written to.
        """


@dataclass(frozen=True)
class Batch:
    """Records sent together, and where they go.

    Attributes:
        object_name: The declared object.
        id_field: The external id field (a dotted path reaches into a record).
        records: The records.
        keys: Their external ids, in the same order.
        context: Names the system and object in errors.
    """

    object_name: str
    id_field: str
    records: list[dict[str, Any]]
    keys: list[str]
    context: ErrorContext


# Every upsert style, by the ``style`` a declaration names it with.
UPSERT_STYLES: DeclarationRegistry[UpsertModel] = DeclarationRegistry("upsert style", discriminator="style")


Outcome = tuple[str, str | None, str | None, str | None]  # status, record id, error code, reason

# The outcome of a record the answer says nothing about.
NO_RESULT: Outcome = ("rejected", None, "NO_RESULT", "the API returned no result for this record")


def external_id(record: Mapping[str, Any], id_field: str) -> str:
    """The record's external id; a dotted field reaches into it (Pipedrive custom_fields.<key>)."""
    return render_value(resolve_path(record, id_field)) or ""


def upsert_path(template: str, object_name: str, id_field: str, key: str = "", record_id: str = "") -> str:
    """A declared path template filled in: ``{object}``, ``{id_field}``, ``{key}`` and ``{id}``."""
    # Keys go into OData key predicates ('...') and URL paths: quotes doubled, then percent-encoded.
    odata_key = quote(key.replace("'", "''"), safe="'")
    return template.format(object=object_name, id_field=id_field, key=odata_key, id=quote(record_id, safe=""))


def text_at(document: Any, path: str) -> str | None:
    """The value at a dotted path as text, or None when absent."""
    value = resolve_path(document, path)
    return None if value is MISSING else render_value(value)


def raise_for(response: httpx.Response, context: ErrorContext) -> None:
    """Raise an ApiRequestError naming the upsert declaration for a non-2xx answer."""
    if not response.is_success:
        message, code = describe_error_body(
            response=response, message_paths=context.message_paths, code_paths=context.code_paths
        )
        raise ApiRequestError(
            f"{context.where}: {response.request.method} {response.request.url.path} failed: HTTP "
            f"{response.status_code}{' ' + code if code else ''}: {message}.",
            fix=f"check the upsert declaration of {context.where} in {context.yaml_path}.",
            status=response.status_code,
            code=code,
        )


def outcome_of(status: int, body: Any, created: bool, id_path: str | None, context: ErrorContext) -> Outcome:
    """One sub-response (a $batch part, a /bulk entry, a per-record answer) as an outcome."""
    if 200 <= status < 300:
        record_id = text_at(body, id_path) if id_path and isinstance(body, dict | list) else None
        return ("created" if created or status == 201 else "updated", record_id, None, None)
    fake = httpx.Response(status, content=json.dumps(body).encode() if not isinstance(body, bytes) else body)
    message, code = describe_error_body(
        response=fake, message_paths=context.message_paths, code_paths=context.code_paths
    )
    return ("rejected", None, code or f"HTTP_{status}", message)
