"""A real ``redis-server`` for the writer-lock tests (password, loopback, no persistence), started once
per session; PostgreSQL is the warehouse suite's ``initdb`` server (``warehouse_server``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_pipelines_sandbox.redis_server import RedisServer, redis_unavailable_reason, running_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    reason = redis_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
