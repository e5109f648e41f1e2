"""Salesforce Bulk API 2.0: a query job for windows too large to page through the REST query.

A ``COUNT()`` of the window (through the same resource, ``query`` or ``queryAll``) decides: at
``bulk.threshold_records`` or more the extract creates a query job, polls it with a growing wait
until ``JobComplete``, and reads its CSV results, one after another (``Sforce-Locator``) or
``parallel_results`` at a time ('Get Parallel Results'). Each result page becomes one batch.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from crm_pipelines.connectors.collect import Collector, ExtractStats, Pass, render_request
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.pages import PageCounter
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.reads.base import READ_METHODS, ObjectRead, ReadMethod
from crm_pipelines.connectors.session import Session
from crm_pipelines.connectors.spec import ObjectSpec

__all__ = [
    "BulkQueryJob",
    "bulk_extract",
    "use_bulk",
]

log = logging.getLogger(__name__)


def use_bulk(
    session: Session,
    obj: ObjectSpec,
    run: Pass,
    values: Mapping[str, Any],
    context: ErrorContext,
    stats: ExtractStats,
) -> bool:
    """Size the window with the declared COUNT() query through the same resource (query/queryAll)."""
    assert obj.bulk is not None
    if obj.bulk.threshold_records == 0:
        return True
    request = render_request(obj, run.request.url, values, query=obj.bulk.count_query)
    body = session.get_json(PageRequest(url=request.url, params=request.params), context=context)
    stats.requests += 1
    total = resolve_path(body, "totalSize")
    count = int(str(total)) if total not in (None, MISSING) else 0
    log.info("%s: %d records in the window (bulk from %d)", context.where, count, obj.bulk.threshold_records)
    return count >= obj.bulk.threshold_records


def bulk_extract(
    session: Session,
    obj: ObjectSpec,
    object_name: str,
    run: Pass,
    values: Mapping[str, Any],
    context: ErrorContext,
    collector: Collector,
    pages: PageCounter,
) -> Iterator[pa.RecordBatch]:
    """Run the window as one Bulk API 2.0 query job and yield a batch per result page."""
    bulk = obj.bulk
    assert bulk is not None
    query = render_request(obj, run.request.url, values, query=bulk.query).params["q"]
    operation = "queryAll" if run.includes_deleted else "query"
    jobs = PageRequest(url=bulk.jobs_path.format(object=object_name))
    job = session.post_json(
        jobs,
        {"operation": operation, "query": query, "contentType": "CSV", "columnDelimiter": "COMMA"},
        context=context,
    )
    job_id = str(job["id"])
    collector.stats.bulk_jobs.append(job_id)
    collector.stats.requests += 1
    job_url = f"{jobs.url.rstrip('/')}/{job_id}"
    started = time.monotonic()
    wait = bulk.poll_initial_seconds
    while True:
        state = session.get_json(PageRequest(url=job_url), context=context)
        collector.stats.requests += 1
        status = str(state.get("state"))
        if status == "JobComplete":
            break
        if status in ("Failed", "Aborted"):
            message = state.get("errorMessage") or "no error message"
            raise ApiRequestError(
                f"{context.where}: Bulk API query job {job_id} ended {status}: {message}.",
                fix=(
                    "check the job in Setup > Bulk Data Load Jobs; a query Bulk 2.0 cannot run (e.g. an "
                    f"unsupported clause) must be changed in bulk.query of {object_name} in {context.yaml_path}."
                ),
                code=f"BULK_JOB_{status.upper()}",
            )
        if time.monotonic() - started > bulk.timeout_seconds:
            raise ApiRequestError(
                f"{context.where}: Bulk API query job {job_id} still {status} after {bulk.timeout_seconds:.0f} s.",
                fix=f"raise bulk.timeout_seconds of {object_name} in {context.yaml_path} or run again later.",
            )
        time.sleep(wait)
        wait = min(bulk.poll_max_seconds, wait * 2)
    if bulk.parallel_results:
        contents = _parallel_results(session, job_url, bulk.parallel_results, context, collector.stats)
    else:
        contents = _sequential_results(session, job_url, bulk.max_records_per_page, context)
    for content in contents:
        records = _csv_records(content)
        kept = collector.add(records, cursor_path=collector.cursor_field_path, deleted_pass=False)
        pages.page(records=len(records), kept=kept, deleted_pass=False)
        batch = collector.flush()
        if batch is not None:
            yield batch


def _sequential_results(
    session: Session, job_url: str, page_records: int, context: ErrorContext
) -> Iterator[bytes]:
    """Result pages one after another, each naming the next in its Sforce-Locator header."""
    locator: str | None = None
    while True:
        params = {"maxRecords": str(page_records)}
        if locator:
            params["locator"] = locator
        response = session.send(
            "GET", PageRequest(url=f"{job_url}/results", params=params), context=context, accept="text/csv"
        )
        yield response.content
        locator = response.headers.get("Sforce-Locator")
        if not locator or locator == "null":
            return


def _parallel_results(
    session: Session, job_url: str, parallel: int, context: ErrorContext, stats: ExtractStats
) -> Iterator[bytes]:
    """Result pages fetched ``parallel`` at a time from the URLs 'Get Parallel Results' lists, in order.

    Pages are held only while earlier ones are still in flight: at most ``parallel`` in memory.
    """

    def links() -> Iterator[str]:
        request: PageRequest | None = PageRequest(url=f"{job_url}/resultPages")
        while request is not None:
            answer = session.get_json(request, context=context)
            stats.requests += 1
            for page in answer.get("resultPages") or []:
                if isinstance(page, dict) and page.get("resultUrl"):
                    yield str(page["resultUrl"])
            following = answer.get("nextRecordsUrl")
            request = None if answer.get("done") or not following else PageRequest(url=str(following))

    def fetch(url: str) -> bytes:
        return session.send("GET", PageRequest(url=url), context=context, accept="text/csv").content

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=f"{context.system_name}-bulk") as pool:
        in_flight: deque[Future[bytes]] = deque()
        for url in links():
            in_flight.append(pool.submit(fetch, url))
            if len(in_flight) >= parallel:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def _csv_records(content: bytes) -> list[dict[str, str | None]]:
    """Bulk 2.0 CSV rows as records; an empty field is a null (Bulk writes nulls as nothing)."""
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    return [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]


class BulkQueryJob(ReadMethod):
    """An object with ``bulk`` whose window has ``bulk.threshold_records`` or more (a COUNT() says)."""

    precedence = 20

    def takes(self, read: ObjectRead, run: Pass) -> bool:
        if read.obj.bulk is None:
            return False
        return use_bulk(read.session, read.obj, run, read.values, read.context, read.collector.stats)

    def extract(self, read: ObjectRead, run: Pass) -> Iterator[pa.RecordBatch]:
        return bulk_extract(
            read.session,
            read.obj,
            read.object_name,
            run,
            read.values,
            read.context,
            read.collector,
            read.pages,
        )


READ_METHODS.add("bulk", BulkQueryJob())
