"""The rate-limit window on PostgreSQL: workers on several hosts share one account's budget.

Two windows with their own connections stand for two hosts, on a real server from ``initdb``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from crm_pipelines.connectors.limits import (
    RateLimitSpec,
    TokenBucket,
    clear_buckets,
    open_window,
    shared_bucket,
)
from crm_pipelines.connectors.rate_windows.postgresql import Window
from crm_pipelines.settings import RATE_LIMIT_URL
from crm_pipelines_sandbox.postgres_server import PostgresServer, running_postgres


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with running_postgres(database="rates") as running:
        yield running


def url(server: PostgresServer) -> str:
    return f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/{server.database}"


def test_two_hosts_share_the_window_and_the_pause(server: PostgresServer) -> None:
    first, second = (
        Window(url(server), account="acct-a", capacity=3, interval_seconds=2.0, margin_seconds=0.05)
        for _ in range(2)
    )
    try:
        assert [first.try_send(), second.try_send(), first.try_send()] == [0.0, 0.0, 0.0]
        assert 0.0 < second.try_send() <= 2.05  # the window is full of the other host's sends too
        first.hold(30.0)  # a 429 with Retry-After: 30 seen on the first host
        assert second.try_send() == pytest.approx(30.0, abs=1.0)
        second.reset()
        assert first.try_send() == 0.0
        other = Window(url(server), account="acct-b", capacity=3, interval_seconds=2.0, margin_seconds=0.05)
        assert other.try_send() == 0.0  # another account has its own budget
        other.close()
    finally:
        first.close()
        second.close()


def test_buckets_on_two_hosts_never_exceed_the_accounts_limit_together(server: PostgresServer) -> None:
    limit, interval = 5, 1.0
    sent: list[float] = []
    lock = threading.Lock()

    def host() -> None:
        window = Window(
            url(server), account="acct-c", capacity=limit, interval_seconds=interval, margin_seconds=0.02
        )
        bucket = TokenBucket(capacity=limit, interval_seconds=interval, window=window)
        try:
            for _ in range(6):
                bucket.acquire()
                with lock:
                    sent.append(time.time())
        finally:
            window.close()

    threads = [threading.Thread(target=host) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent.sort()
    busiest = max(sum(1 for t in sent if s <= t < s + interval) for s in sent)
    assert len(sent) == 12
    assert busiest <= limit


def test_the_url_picks_the_window_and_an_unknown_scheme_is_named(
    server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RATE_LIMIT_URL, url(server).replace("postgresql://", "postgresql+psycopg://"))
    clear_buckets()
    try:
        bucket = shared_bucket(
            base_url="https://api.example.com",
            fingerprint="f",
            rate_limit=RateLimitSpec(requests=2, interval_seconds=1),
        )
        assert isinstance(bucket.window, Window)
    finally:
        clear_buckets()
    monkeypatch.setenv(RATE_LIMIT_URL, "mongodb://somewhere/db")
    with pytest.raises(ValueError, match="CRM_PIPELINES_RATE_LIMIT_URL: no rate-limit window for 'mongodb'"):
        open_window(account="x", capacity=1, interval_seconds=1, margin_seconds=0.01)
