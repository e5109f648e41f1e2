"""The webhook events sensor: stored events become targeted run requests, each once."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from crm_pipelines.definitions import defs
from crm_pipelines.webhooks.routing import Routes, RoutesError, load_routes, plan_runs
from crm_pipelines.webhooks.senders import Event
from crm_pipelines.webhooks.store import EventStore
from sensors.webhook_events import WEBHOOK_OBJECTS_TAG, WEBHOOK_ROUTE_TAG, webhook_events_sensor


def deal(event_id: int, deal_id: int, stage: str = "closedwon") -> Event:
    payload = {
        "eventId": event_id,
        "subscriptionType": "deal.propertyChange",
        "propertyName": "dealstage",
        "propertyValue": stage,
        "objectId": deal_id,
    }
    return Event("hubspot", str(event_id), "deal.propertyChange", str(deal_id), payload)


def test_closed_won_deals_start_one_order_run_and_other_events_are_skipped(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.sqlite3")
    store.add([deal(1, 42), deal(2, 43, stage="appointmentscheduled"), deal(3, 44), deal(4, 42)])
    store.add([Event("zendesk", "z1", "zen:event-type:ticket.created", "9", {})])

    plan = plan_runs(store, load_routes(), cursor=0)
    assert [(r.route, r.object_ids, r.events) for r in plan.runs] == [
        ("hubspot_deal_closed_won", ["42", "44"], 3)
    ]
    assert ["reverse_sync", "orders_to_erp"] in plan.runs[0].assets
    assert plan.skipped == {"hubspot:deal.propertyChange": 1, "zendesk:zen:event-type:ticket.created": 1}
    assert plan.cursor == 5
    # Nothing new after the cursor: nothing to run.
    assert plan_runs(store, load_routes(), cursor=plan.cursor).runs == []


def test_the_sensor_keeps_its_cursor_and_a_repeated_tick_launches_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.sqlite3"
    monkeypatch.setenv("CRM_WEBHOOK_STORE", str(path))
    with dg.instance_for_test() as instance:
        empty = webhook_events_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(empty, dg.SensorResult)
        assert not empty.run_requests
        EventStore(path).add([deal(1, 42), deal(2, 43)])
        first = webhook_events_sensor(dg.build_sensor_context(instance=instance, cursor=None))
        assert isinstance(first, dg.SensorResult)
        assert first.run_requests
        (request,) = first.run_requests
        assert request.tags[WEBHOOK_ROUTE_TAG] == "hubspot_deal_closed_won"
        assert request.tags[WEBHOOK_OBJECTS_TAG] == "42,43"
        assert dg.AssetKey(["reverse_sync", "orders_to_erp"]) in (request.asset_selection or [])
        assert first.cursor == "2"
        # The same tick again (a sensor evaluated twice) asks for the same run key: Dagster runs it once.
        again = webhook_events_sensor(dg.build_sensor_context(instance=instance, cursor=None))
        assert isinstance(again, dg.SensorResult)
        assert [r.run_key for r in again.run_requests or []] == [request.run_key]
        after = webhook_events_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert isinstance(after, dg.SensorResult)
        assert not after.run_requests


def test_every_route_names_assets_of_the_nightly_job() -> None:
    graph = defs().resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    for name, route in load_routes().routes.items():
        for key in route.assets:
            assert dg.AssetKey(key) in keys, f"{name}: no asset {key}"


def test_a_route_for_an_unknown_sender_is_refused_with_its_key() -> None:
    with pytest.raises(ValueError, match="unknown sender 'hubspott'"):
        Routes.model_validate(
            {"routes": {"x": {"sender": "hubspott", "event_types": ["a"], "assets": [["a"]]}}}
        )
    assert issubclass(RoutesError, ValueError)
