"""The webhook events sensor: stored events (``crm-pipelines webhooks``) into targeted runs.

Which events start which assets is :mod:`crm_pipelines.webhooks.routing` (``routes.yaml``); the
sensor keeps the store's sequence number as its cursor and hands Dagster one run request per route
and tick, for today's business day (the partition tonight's run will reconcile). Every 15 s, so an event becomes a run request within 60 s.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from crm_pipelines.jobs import nightly_sync_job
from crm_pipelines.settings import current_timezone
from crm_pipelines.webhooks.receiver import default_store_path
from crm_pipelines.webhooks.routing import load_routes, plan_runs
from crm_pipelines.webhooks.store import EventStore

WEBHOOK_ROUTE_TAG = "crm_pipelines/webhook_route"
WEBHOOK_OBJECTS_TAG = "crm_pipelines/webhook_objects"
INTERVAL_SECONDS = 15


@dg.sensor(
    name="webhook_events",
    job=nightly_sync_job,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the assets a stored webhook event calls for (crm_pipelines/webhooks/routes.yaml).",
)
def webhook_events_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    path = default_store_path()
    if not path.exists():
        return dg.SensorResult(skip_reason=f"no event store at {path} (is `crm-pipelines webhooks` running?)")
    plan = plan_runs(EventStore(path), load_routes(), cursor=int(context.cursor or 0))
    for kind, count in plan.skipped.items():
        context.log.info(f"{count} {kind} events match no route")
    partition = dt.datetime.now(ZoneInfo(current_timezone())).date().isoformat()  # today's business day
    requests = [
        dg.RunRequest(
            run_key=run.run_key,
            partition_key=partition,
            asset_selection=[dg.AssetKey(key) for key in run.assets],
            tags={WEBHOOK_ROUTE_TAG: run.route, WEBHOOK_OBJECTS_TAG: ",".join(run.object_ids)[:1000]},
        )
        for run in plan.runs
    ]
    return dg.SensorResult(
        run_requests=requests,
        cursor=str(plan.cursor),
        skip_reason=None if requests else "no new event calls for a run",
    )
