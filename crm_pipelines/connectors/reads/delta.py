"""Change tracking: follow the delta link the last read ended with, or start tracking with a full read.

A change-tracked read is not a window: the first read asks for the declared headers (Dataverse
``Prefer: odata.track-changes``) and keeps the final page's delta link; the next read follows it
and gets what changed and what was deleted since, and a new link.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from crm_pipelines.connectors.collect import Collector, Pass, render_request, render_templates
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.pages import PageCounter, walk_pages
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.reads.base import READ_METHODS, ObjectRead, ReadMethod
from crm_pipelines.connectors.session import Session
from crm_pipelines.connectors.spec import ObjectSpec, SystemSpec

__all__ = ["DeltaLink", "delta_extract"]

log = logging.getLogger(__name__)


def delta_extract(
    session: Session,
    system: SystemSpec,
    obj: ObjectSpec,
    object_name: str,
    values: Mapping[str, Any],
    delta_link: str | None,
    context: ErrorContext,
    collector: Collector,
    pages: PageCounter,
    pages_per_batch: int,
) -> Iterator[pa.RecordBatch]:
    """Follow ``delta_link`` (changes and deletions since), or start tracking with a full read.

    An expired link (declared statuses or codes) falls back to a full tracked read; the stats then
    say ``full_read`` so the caller writes a whole snapshot instead of merging changes.
    """
    delta = obj.incremental.delta
    assert delta is not None
    headers = {**obj.request.headers, **delta.headers}
    if delta_link is not None:
        first = PageRequest(url=delta_link, params={}, headers=render_templates(headers, values))
    else:
        collector.stats.full_read = True
        first = render_request(obj, obj.request.path, values, params=delta.params or None, headers=headers)
    size = int(values["page_size"])
    paging = system.paging_of(object_name)
    link: str | None = None
    pages_in_batch = 0
    try:
        for _, body, records in walk_pages(
            session, paging, first, size, obj.records_path, object_name, context
        ):
            # Not a window: the link says where the last read ended.
            kept = collector.add(
                records, cursor_path=collector.cursor_field_path, deleted_pass=False, windowed=False
            )
            pages.page(records=len(records), kept=kept, deleted_pass=False)
            found = resolve_path(body, delta.link_path)
            if isinstance(found, str) and found:
                link = found
            pages_in_batch += 1
            if pages_in_batch >= pages_per_batch:
                batch = collector.flush()
                if batch is not None:
                    yield batch
                pages_in_batch = 0
    except ApiRequestError as exc:
        expired = exc.status in delta.expired_statuses or (
            exc.code is not None and exc.code in delta.expired_codes
        )
        if delta_link is None or not expired or pages.number > 0:
            raise
        log.warning("%s: the delta link expired (%s); reading everything again", context.where, exc.detail)
        yield from delta_extract(
            session, system, obj, object_name, values, None, context, collector, pages, pages_per_batch
        )
        return
    batch = collector.flush()
    if batch is not None:
        yield batch
    if link is None:
        raise ApiRequestError(
            f"{context.where}: the change-tracked read ended without a delta link ({delta.link_path}).",
            fix=f"check incremental.delta of {object_name} in {context.yaml_path} and that change tracking "
            "is enabled for the table in the system.",
        )
    collector.stats.delta_link = session.relative(link)


class DeltaLink(ReadMethod):
    """An object with ``incremental.delta``: change tracking replaces the cursor window."""

    precedence = 10

    def takes(self, read: ObjectRead, run: Pass) -> bool:
        return read.obj.incremental.delta is not None

    def extract(self, read: ObjectRead, run: Pass) -> Iterator[pa.RecordBatch]:
        return delta_extract(
            read.session,
            read.system,
            read.obj,
            read.object_name,
            read.values,
            read.delta_link,
            read.context,
            read.collector,
            read.pages,
            read.pages_per_batch,
        )


READ_METHODS.add("delta", DeltaLink())
