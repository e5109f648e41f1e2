"""How ``pytest -n 2 --dist loadfile`` (the Makefile's PYTEST_ARGS) shares the suite between workers.

Two changes to xdist's file-by-file scheduling, neither to what a test runs or checks:

* A package whose conftest holds package-scoped fixtures (a sandbox, its first night) is one unit, so
  one worker starts that sandbox once; file by file, each worker that got one of its files started
  its own (the privacy package ran its first night twice).
* The units known to take minutes start first. xdist orders units by their number of tests, which
  left the single-test end-to-end files for last: the run then ended with one worker idle while the
  other finished a long flow. Units not named here keep xdist's order.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.scheduler import LoadFileScheduling
    from xdist.workermanager import WorkerController

# Steps that talk to other systems are retried with a backoff (crm_pipelines/retries.py); a test that
# makes one fail on purpose need not wait the production delay.
os.environ.setdefault("CRM_PIPELINES_STEP_RETRY_DELAY_SECONDS", "0.1")

# Packages whose files share package-scoped fixtures: each runs whole on one worker.
SHARED_PACKAGES = ("tests/crm_pipelines/privacy/",)

# The longest units, longest first (seconds on the shared 2-CPU VM in the comments).
LONG_FIRST = (
    "tests/crm_pipelines/privacy/",  # a sandbox, three full nights, an erasure: ~230 s
    "tests/crm_pipelines/test_nightly_sync.py",  # two full nights: ~170 s
    "tests/crm_pipelines/syncs/test_convergence.py",  # eleven nights of the golden syncs: ~120 s
    "tests/crm_pipelines/test_nightly_sync_s3.py",  # an S3 server, a night on a folder, one on a bucket: ~100 s
    "tests/crm_pipelines/test_concurrency.py",  # a daemon and three launches: ~80 s
    "tests/crm_pipelines/test_executors.py",  # redis and two celery workers: ~45-80 s
    "tests/crm_pipelines/test_deploy_local.py",  # the whole topology and a run: ~70 s
    "tests/crm_pipelines/webhooks/test_sandbox_events.py",  # ~50 s
    "tests/crm_pipelines/syncs/test_flow_sugarcrm_zendesk.py",  # ~30 s
    "tests/crm_pipelines/syncs/test_hubspot_leads_to_dynamics.py",  # ~30 s
    "tests/crm_pipelines/syncs/test_flow_dynamics_to_hubspot.py",  # ~30 s
)


def _unit(nodeid: str) -> str:
    """The unit a test belongs to: its shared package, else its file."""
    path = nodeid.split("::", 1)[0]
    return next((package for package in SHARED_PACKAGES if path.startswith(package)), path)


def _rank(unit: str) -> int:
    return next((i for i, prefix in enumerate(LONG_FIRST) if unit.startswith(prefix)), len(LONG_FIRST))


def _scheduling(config: pytest.Config, log: Producer) -> LoadFileScheduling:
    from xdist.scheduler import LoadFileScheduling

    class SuiteScheduling(LoadFileScheduling):
        """File by file, shared packages whole, the long units first."""

        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

        def _assign_work_unit(self, node: WorkerController) -> None:
            if not self.ordered:  # the first assignment: the queue holds every unit
                self.ordered = True
                long_units = sorted((u for u in self.workqueue if _rank(u) < len(LONG_FIRST)), key=_rank)
                for unit in reversed(long_units):
                    self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return SuiteScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadFileScheduling | None:
    if config.getvalue("dist") != "loadfile":
        return None  # another distribution asked for: xdist's own
    return _scheduling(config, log)
