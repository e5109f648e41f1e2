"""Talking to an API politely (limits.py): pacing, Retry-After, the URL policy, and one budget per
account across the processes Dagster runs steps in."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from crm_pipelines.connectors.limits import (
    AccountWindow,
    ErrorContext,
    InsecureURLError,
    TokenBucket,
    check_url_allowed,
    clear_buckets,
    parse_retry_after,
    shared_bucket,
)
from crm_pipelines.connectors.spec import RateLimitSpec, load_system
from crm_pipelines.settings import RATE_LIMIT_DIR

CONTEXT = ErrorContext(system_name="salesforce", system_title="Salesforce", object_name="Contact")
HUBSPOT = load_system(name="hubspot")
LIMIT = RateLimitSpec(requests=5, interval_seconds=1.0)


def _send(count: int, start_at: float, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """A step in its own process: take ``count`` tokens of the account's bucket, report when."""
    bucket = shared_bucket(base_url="https://api.example.com", fingerprint="acct", rate_limit=LIMIT)
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(count):
        bucket.acquire()
        queue.put(time.time())


def test_processes_calling_one_account_share_its_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RATE_LIMIT_DIR, str(tmp_path))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + 2.0  # both processes are up before either sends
    workers = [context.Process(target=_send, args=(6, start_at, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    sent = sorted(queue.get(timeout=60) for _ in range(18))
    for worker in workers:
        worker.join(timeout=30)
    # Without the shared window each process would send 5 at once: 15 in the first second.
    busiest = max(sum(1 for t in sent if s <= t < s + LIMIT.interval_seconds) for s in sent)
    assert busiest <= LIMIT.requests
    assert sent[-1] - sent[0] >= 3.0  # 18 sends at 5 per second take at least three more seconds


def test_a_pause_in_one_process_holds_the_others(tmp_path: Path) -> None:
    now = [1000.0]
    first = AccountWindow(
        tmp_path / "a.sqlite", capacity=3, interval_seconds=10, margin_seconds=0.1, clock=lambda: now[0]
    )
    second = AccountWindow(
        tmp_path / "a.sqlite", capacity=3, interval_seconds=10, margin_seconds=0.1, clock=lambda: now[0]
    )
    assert [first.try_send(), second.try_send(), first.try_send()] == [0.0, 0.0, 0.0]
    assert second.try_send() == pytest.approx(10.1)  # the window is full of the other's sends too
    now[0] += 10.2
    assert second.try_send() == 0.0
    first.hold(30.0)  # e.g. a 429 with Retry-After: 30 seen by the first process
    assert second.try_send() == pytest.approx(30.0)
    first.reset()
    assert second.try_send() == 0.0


def test_clearing_the_buckets_forgets_the_shared_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RATE_LIMIT_DIR, str(tmp_path))
    clear_buckets()
    bucket = shared_bucket(base_url="https://api.example.com", fingerprint="f", rate_limit=LIMIT)
    assert isinstance(bucket.window, AccountWindow)  # no CRM_PIPELINES_RATE_LIMIT_URL: a file on this host
    assert bucket.window.path.parent == tmp_path
    for _ in range(LIMIT.requests):
        assert bucket.window.try_send() == 0.0
    assert bucket.window.try_send() > 0
    clear_buckets()
    fresh = shared_bucket(base_url="https://api.example.com", fingerprint="f", rate_limit=LIMIT)
    assert fresh is not bucket
    assert fresh.window is not None
    assert fresh.window.try_send() == 0.0
    clear_buckets()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 0 ", 0.0, id="zero"),
        pytest.param(None, None, id="absent"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(
            format_datetime(datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC), usegmt=True), 30.0, id="http-date"
        ),
        pytest.param(
            format_datetime(datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC), usegmt=True),
            0.0,
            id="http-date-past",
        ),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(value=value, now=now) == expected


def test_token_bucket_paces_and_pauses() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(capacity=2, interval_seconds=1.0, clock=lambda: now[0], sleep=sleep)
    assert bucket.acquire() == 0
    assert bucket.acquire() == 0
    # A token is back after 0.5 s, but two requests already went out in this 1 s window: the next
    # waits until the first leaves it (plus a small margin for the server's arrival stamp).
    assert bucket.acquire() == pytest.approx(1.02)
    bucket.pause(3.0)  # e.g. Retry-After: 3
    assert bucket.acquire() >= 3.0 - 1e-9
    assert sum(slept) == pytest.approx(now[0])


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("https://example.my.salesforce.com", True, id="https"),
        pytest.param("http://127.0.0.1:8123", True, id="loopback-v4"),
        pytest.param("http://127.10.0.3:8123", True, id="loopback-v4-range"),
        pytest.param("http://[::1]:8123", True, id="loopback-v6"),
        pytest.param("http://localhost:8123", True, id="localhost"),
        pytest.param("http://api.hubapi.com", False, id="plain-http-remote"),
        pytest.param("http://10.0.0.5", False, id="plain-http-private"),
        pytest.param("ftp://127.0.0.1", False, id="other-scheme"),
    ],
)
def test_plain_http_only_to_loopback(url: str, allowed: bool) -> None:
    if allowed:
        check_url_allowed(url=url, context=CONTEXT)
    else:
        with pytest.raises(InsecureURLError, match="https"):
            check_url_allowed(url=url, context=CONTEXT)


def test_accounts_share_one_bucket() -> None:
    limit = HUBSPOT.rate_limit
    a = shared_bucket(base_url="https://api.hubapi.com/", fingerprint="f1", rate_limit=limit)
    assert shared_bucket(base_url="https://API.hubapi.com", fingerprint="f1", rate_limit=limit) is a
    assert shared_bucket(base_url="https://api.hubapi.com", fingerprint="f2", rate_limit=limit) is not a
