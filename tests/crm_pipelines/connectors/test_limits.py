"""One account, one budget: the rate limit holds across the processes Dagster runs steps in."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from crm_pipelines.connectors.limits import RATE_LIMIT_DIR, AccountWindow, clear_buckets, shared_bucket
from crm_pipelines.connectors.spec import RateLimitSpec

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
    assert bucket.window is not None and bucket.window.path.parent == tmp_path
    for _ in range(LIMIT.requests):
        assert bucket.window.try_send() == 0.0
    assert bucket.window.try_send() > 0
    clear_buckets()
    fresh = shared_bucket(base_url="https://api.example.com", fingerprint="f", rate_limit=LIMIT)
    assert fresh is not bucket and fresh.window is not None
    assert fresh.window.try_send() == 0.0
    clear_buckets()
