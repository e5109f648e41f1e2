"""A multipart OData ``$batch`` of per-record requests with continue-on-error (Dynamics 365, SAP Business One)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import uuid
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import Field, field_validator

from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.session import Session, decode_json
from crm_pipelines.connectors.spec_base import check_template
from crm_pipelines.connectors.writes.base import (
    NO_RESULT,
    UPSERT_STYLES,
    Batch,
    Outcome,
    UpsertModel,
    outcome_of,
    text_at,
    upsert_path,
)

__all__ = ["ODataBatchUpsert"]


@UPSERT_STYLES.register("odata_batch")
class ODataBatchUpsert(UpsertModel):
    """A multipart ``$batch`` of per-record requests, continuing on error (Dynamics 365)."""

    style: Literal["odata_batch"] = "odata_batch"
    item_method: Literal["PATCH", "PUT", "POST"] = "PATCH"
    item_path: str = Field(description="Per-record path: {object}, {id_field} and {key} (quoted as OData).")
    odata_version: Literal[3, 4] = 4
    item_headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Headers of every part, e.g. Prefer: return=representation (Dataverse then answers an "
            "upsert 201 created / 200 updated instead of 204 for both)."
        ),
    )
    item_params: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters of every part ({object}, {id_field}), e.g. $select: accountid.",
    )
    id_path: str | None = Field(
        default=None,
        description="The record id in a part's body; else the id in its OData-EntityId / Location header.",
    )
    id_in_body: bool = Field(
        default=True,
        description=(
            "Send the id field in each part's body too. False: it is left out (an update by the primary "
            "key names the record in the URL, and Dataverse takes no primary key as a property)."
        ),
    )

    @field_validator("item_headers", "item_params")
    @classmethod
    def _item_templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_template(template, frozenset({"object", "id_field"}))
        return value

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One multipart ``$batch`` request, a part per record; the answer's parts are the outcomes."""
        boundary = f"batch_{uuid.uuid4()}"
        base_path = httpx.URL(session.token().api_base_url).path.rstrip("/")
        names = {"object": batch.object_name, "id_field": batch.id_field}
        query = urlencode({k: v.format(**names) for k, v in self.item_params.items()}, safe="$,()'")
        item_headers = "".join(f"{k}: {v.format(**names)}\r\n" for k, v in self.item_headers.items())
        parts: list[bytes] = []
        for record, key in zip(batch.records, batch.keys, strict=True):
            path = upsert_path(self.item_path, batch.object_name, batch.id_field, key)
            target = path if path.startswith(base_path + "/") or not base_path else base_path + path
            if query:
                target = f"{target}?{query}"
            sent = {k: v for k, v in record.items() if self.id_in_body or k != batch.id_field}
            payload = json.dumps(sent, ensure_ascii=False).encode("utf-8")
            parts.append(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                f"{self.item_method} {target} HTTP/1.1\r\nContent-Type: application/json\r\n"
                f"Accept: application/json\r\n{item_headers}\r\n".encode()
                + payload
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Prefer": "odata.continue-on-error"}
        if self.odata_version == 4:
            headers.update({"OData-Version": "4.0", "OData-MaxVersion": "4.0"})
        request = PageRequest(url=upsert_path(self.path, batch.object_name, batch.id_field), headers=headers)
        response = session.send(
            "POST",
            request,
            context=batch.context,
            content=body,
            content_type=f"multipart/mixed; boundary={boundary}",
            accept="multipart/mixed",
        )
        answers = _parse_multipart(response)
        outcomes: list[Outcome] = []
        for position in range(len(batch.records)):
            if position >= len(answers):
                outcomes.append(NO_RESULT)
                continue
            status, part_headers, content = answers[position]
            parsed: Any = {}
            if content.strip():
                try:
                    parsed = decode_json(content)
                except (ValueError, UnicodeDecodeError):
                    parsed = content
            outcome = outcome_of(status, parsed, False, None, batch.context)
            if outcome[0] != "rejected":
                record_id = (
                    text_at(parsed, self.id_path) if self.id_path and isinstance(parsed, dict) else None
                )
                if record_id is None:
                    entity = part_headers.get("odata-entityid") or part_headers.get("location") or ""
                    found = re.search(r"\(([^()]*)\)\s*$", entity)
                    record_id = (
                        found.group(1).strip("'")
                        if found
                        else text_at(parsed, "id")
                        if isinstance(parsed, dict)
                        else None
                    )
                outcome = (outcome[0], record_id, None, None)
            outcomes.append(outcome)
        return outcomes


_STATUS_LINE = re.compile(rb"^HTTP/\d(?:\.\d)?\s+(\d{3})")


def _parse_multipart(response: httpx.Response) -> list[tuple[int, dict[str, str], bytes]]:
    """The (status, headers, body) of each HTTP response inside a multipart ``$batch`` answer.

    A changeset nested in the answer (multipart inside multipart) is flattened in order.
    """
    content_type = response.headers.get("content-type", "")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response.content
    )
    out: list[tuple[int, dict[str, str], bytes]] = []

    def walk(part: Any) -> None:
        if part.is_multipart():
            for child in part.iter_parts():
                walk(child)
            return
        raw = part.get_payload(decode=True) or b""
        head, _, rest = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        lines = head.split(b"\n")
        status = _STATUS_LINE.match(lines[0] if lines else b"")
        if status is None:
            return
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        out.append((int(status.group(1)), headers, rest))

    walk(message)
    return out
