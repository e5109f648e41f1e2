"""The executors the nightly and file jobs can run their steps with, chosen by ``CRM_PIPELINES_EXECUTOR``.

* ``forked`` (the default): each step in its own process on the run's machine, forked from a server
  that imported the code location once (``crm_pipelines/preload.py``).
* ``celery``: each step is a Celery task on a Redis broker, run by whichever worker takes it
  (``celery -A crm_pipelines.celery_worker worker``, on this host or others). The run worker only
  orchestrates; the workers share the Dagster instance (``deploy/dagster.yaml``, PostgreSQL).

An executor is added by registering a builder with :func:`executor_kind`; nothing else changes.

The choice is read when the code location loads (``crm_pipelines.jobs``), so the webserver, the
daemon and the run workers, which load it from one environment, agree on it. The broker is read when a
run starts.

Environment:

* ``CRM_PIPELINES_EXECUTOR``: ``forked`` or ``celery``.
* ``CRM_PIPELINES_CELERY_BROKER``: the Redis URL of the broker, also the result backend, e.g.
  ``redis://127.0.0.1:6379/0`` (a secret when it holds a password: never printed).
* ``CRM_PIPELINES_CELERY_VISIBILITY_TIMEOUT``: seconds (default 3600) after which Redis hands a step
  whose worker died, and so never acknowledged it, to another worker. It must exceed the longest
  step: a step still running past it is delivered a second time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dagster as dg

__all__ = [
    "CELERY_BROKER",
    "CELERY_VISIBILITY_TIMEOUT",
    "DEFAULT_EXECUTOR",
    "EXECUTOR",
    "celery_app_arguments",
    "celery_settings",
    "executor_kind",
    "executor_kinds",
    "step_executor",
]

EXECUTOR = "CRM_PIPELINES_EXECUTOR"
CELERY_BROKER = "CRM_PIPELINES_CELERY_BROKER"
CELERY_VISIBILITY_TIMEOUT = "CRM_PIPELINES_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_EXECUTOR = "forked"

ExecutorBuilder = Callable[[], dg.ExecutorDefinition]
_BUILDERS: dict[str, ExecutorBuilder] = {}


def executor_kind(name: str) -> Callable[[ExecutorBuilder], ExecutorBuilder]:
    """Register a builder as the executor ``CRM_PIPELINES_EXECUTOR=<name>`` selects."""

    def register(build: ExecutorBuilder) -> ExecutorBuilder:
        if name in _BUILDERS:
            raise ValueError(f"executor {name!r} is registered twice")
        _BUILDERS[name] = build
        return build

    return register


def executor_kinds() -> list[str]:
    """The names ``CRM_PIPELINES_EXECUTOR`` accepts."""
    return sorted(_BUILDERS)


def step_executor(kind: str | None = None) -> dg.ExecutorDefinition:
    """The executor named ``kind``, else by ``CRM_PIPELINES_EXECUTOR``, else the forked one.

    Args:
        kind: A registered name (``forked``, ``celery``); None reads the environment.

    Returns:
        The executor definition for the jobs' ``executor_def``.
    """
    name = kind or os.environ.get(EXECUTOR) or DEFAULT_EXECUTOR
    build = _BUILDERS.get(name)
    if build is None:
        raise ValueError(
            f"{EXECUTOR}={name!r} is not an executor; choose one of {', '.join(executor_kinds())}"
        )
    return build()


@executor_kind("forked")
def forked_steps() -> dg.ExecutorDefinition:
    # Each step in its own process: a crashing step does not take the run down. Spawned processes,
    # Dagster's default, spent seconds of CPU per step importing and building the ~150 assets again:
    # the UI run of the nightly took many times the in-process one (bench/scale_out.py).
    return dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["crm_pipelines.preload"]}}},
        name="forked_steps",
    )


@executor_kind("celery")
def celery_steps() -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    # The broker's URL stays a variable in the run's config: resolved when a run starts, never stored.
    return celery_executor.configured(
        {
            "broker": {"env": CELERY_BROKER},
            "backend": {"env": CELERY_BROKER},
            "config_source": celery_settings(),
        },
        name="celery_steps",
    )


def celery_settings() -> dict[str, Any]:
    """The Celery settings the executor and the workers share (they must agree).

    A step is acknowledged when it ends, not when a worker takes it: a worker killed mid-step leaves
    it unacknowledged, and Redis gives it to another worker once the visibility timeout has passed;
    a pool process killed mid-step is requeued by its worker at once. Every step is idempotent
    (``crm_pipelines/retries.py``), so running it again is safe.
    """
    from dagster_celery.defaults import broker_transport_options

    visibility_timeout = int(os.environ.get(CELERY_VISIBILITY_TIMEOUT, "3600"))
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One step at a time per pool process: a worker holds no steps another worker could run.
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            **broker_transport_options,
            "visibility_timeout": visibility_timeout,
            # Look for abandoned steps every interval (by default every 100 s, after an hour).
            "unacked_restore_interval": max(1, min(10, visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        },
    }


def celery_app_arguments() -> dict[str, Any]:
    """What a worker's Celery app is built from: the broker, the backend and :func:`celery_settings`."""
    from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper

    broker = os.environ.get(CELERY_BROKER)
    if not broker:
        raise RuntimeError(f"set {CELERY_BROKER} to the Redis broker's URL, e.g. redis://127.0.0.1:6379/0")
    return {
        "broker": broker,
        "backend": broker,
        "include": [],
        "config_source": dict_wrapper(dict(DEFAULT_CONFIG, **celery_settings())),
    }
