"""From stored webhook events to run requests: the declared routes (``routes.yaml``).

:func:`plan_runs` reads the events after a cursor, matches each against the routes and gives one
planned run per route (its asset keys, the events' object ids, a run key made of the route and the
events' sequence numbers, so a tick evaluated twice launches nothing twice) and the new cursor.
The sensor (``sensors/webhook_events.py``) only turns them into Dagster run requests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crm_pipelines.webhooks.senders import SENDERS
from crm_pipelines.webhooks.store import EventStore, StoredEvent
from crm_pipelines.yamlfile import parse_declaration

__all__ = ["PlannedRun", "Route", "Routes", "RoutesError", "TickPlan", "load_routes", "plan_runs"]


class RoutesError(ValueError):
    """routes.yaml is missing, not YAML, or does not validate."""


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sender: str
    event_types: list[str] = Field(min_length=1)
    when: dict[str, str] = Field(default_factory=dict)
    assets: list[list[str]] = Field(min_length=1)

    @field_validator("sender")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SENDERS:
            raise ValueError(f"unknown sender {value!r}; senders: {', '.join(sorted(SENDERS))}")
        return value

    @field_validator("assets")
    @classmethod
    def _keys(cls, value: list[list[str]]) -> list[list[str]]:
        for key in value:
            if not key or not all(part and part.replace("_", "").isalnum() for part in key):
                raise ValueError(f"asset key {key!r}: parts of letters, digits and underscores")
        return value

    def matches(self, event: StoredEvent) -> bool:
        if event.sender != self.sender or event.event_type not in self.event_types:
            return False
        return all(str(event.payload.get(name)) == value for name, value in self.when.items())


class Routes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    routes: dict[str, Route] = Field(default_factory=dict)


@cache
def load_routes() -> Routes:
    """The shipped routes (``crm_pipelines/webhooks/routes.yaml``), validated."""
    text = resources.files("crm_pipelines.webhooks").joinpath("routes.yaml").read_text(encoding="utf-8")
    return parse_declaration(text, origin="routes.yaml", model=Routes, error=RoutesError, what="routes")


@dataclass(frozen=True)
class PlannedRun:
    route: str
    run_key: str
    assets: list[list[str]]
    object_ids: list[str]
    events: int


@dataclass
class TickPlan:
    runs: list[PlannedRun]
    cursor: int
    skipped: dict[str, int] = field(default_factory=dict)  # event type -> events of no route


def plan_runs(store: EventStore, routes: Routes, *, cursor: int, limit: int = 1000) -> TickPlan:
    """The runs the events after ``cursor`` call for, and the cursor after them."""
    events = store.since(cursor, limit=limit)
    matched: dict[str, list[StoredEvent]] = {}
    skipped: Counter[str] = Counter()
    for event in events:
        names = [name for name, route in routes.routes.items() if route.matches(event)]
        if not names:
            skipped[f"{event.sender}:{event.event_type}"] += 1
        for name in names:
            matched.setdefault(name, []).append(event)
    runs = []
    for name, hits in matched.items():
        ids = sorted({e.object_id for e in hits if e.object_id is not None})
        runs.append(
            PlannedRun(
                route=name,
                run_key=f"webhook:{name}:{hits[0].seq}-{hits[-1].seq}",
                assets=routes.routes[name].assets,
                object_ids=ids,
                events=len(hits),
            )
        )
    return TickPlan(runs=runs, cursor=events[-1].seq if events else cursor, skipped=dict(skipped))
