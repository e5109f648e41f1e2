"""Benchmark: the webhook receiver's sustained events/s, against a bare ASGI hello-world, in one run.

    uv run python bench/webhooks.py --seconds 10 --concurrency 8

Starts two uvicorn servers on this machine, one after the other, each in its own process with the
same settings: the receiver (``crm_pipelines.webhooks.receiver.Receiver``: HubSpot v3 signature
checked, every event committed to SQLite with ``synchronous=FULL`` before the 200) and a bare ASGI
application that answers 200 to everything. A load generator (``--concurrency`` threads, each one
httpx keep-alive connection) posts signed HubSpot deliveries of one new event each for ``--seconds`` and counts
the answers. Then it measures the latency from a delivery's 200 to the webhook_events sensor's run
request, with the sensor evaluated every ``--interval`` seconds as Dagster does (15 s shipped).

Figures: events/s of each server, their ratio, the receiver's p50/p95 answer time, and p50/p95 from
event to run request.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import httpx

from crm_pipelines.webhooks.routing import load_routes, plan_runs
from crm_pipelines.webhooks.senders import sign_hubspot_v3
from crm_pipelines.webhooks.store import EventStore

SECRET = "bench-secret"

HELLO = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
    """
)

RECEIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from crm_pipelines.webhooks.receiver import Receiver
    from crm_pipelines.webhooks.store import EventStore
    app = Receiver(EventStore(Path(sys.argv[-1])))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(module: Path, port: int, store: Path) -> subprocess.Popen[bytes]:
    code = (
        f"import sys; sys.argv.append({str(store)!r}); sys.path.insert(0, {str(module.parent)!r});"
        f"import uvicorn, {module.stem} as m; "
        f"uvicorn.run(m.app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
    )
    env = {**os.environ, "HUBSPOT_WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/healthz", content=b"", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def _delivery(url: str, event_id: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        [
            {
                "eventId": event_id,
                "subscriptionType": "deal.propertyChange",
                "propertyName": "dealstage",
                "propertyValue": "closedwon",
                "objectId": 1000 + event_id % 50,
            }
        ]
    ).encode()
    stamp = int(time.time() * 1000)
    return body, {
        "content-type": "application/json",
        "X-HubSpot-Request-Timestamp": str(stamp),
        "X-HubSpot-Signature-v3": sign_hubspot_v3(SECRET, "POST", url, body, stamp),
    }


def _load(url: str, seconds: float, concurrency: int, first_id: int) -> tuple[int, list[float]]:
    """Deliveries answered 200 in ``seconds``, and their answer times.

    One thread per connection, each with its own keep-alive client: httpx's async pool shared by
    many tasks tops out near 200 requests/s here, a sync client near 1,000.
    """
    ids = itertools.count(first_id)
    stop = time.monotonic() + seconds

    def worker() -> tuple[int, list[float]]:
        ok, latencies = 0, []
        with httpx.Client(timeout=30, trust_env=False) as client:
            while time.monotonic() < stop:
                body, headers = _delivery(url, next(ids))
                started = time.perf_counter()
                answer = client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                ok += answer.status_code == 200
        return ok, latencies

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda _: worker(), range(concurrency)))
    return sum(ok for ok, _ in results), [x for _, times in results for x in times]


def _load_in_process(job: tuple[str, float, int, int]) -> tuple[int, list[float]]:
    return _load(*job)


def _throughput(
    module: Path, store: Path, seconds: float, concurrency: int, processes: int
) -> tuple[float, list[float]]:
    port = _free_port()
    process = _serve(module, port, store)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/hubspot"
        # Several client processes: one Python process's GIL caps the load near 1,000 requests/s.
        jobs = [(url, seconds, concurrency, n * 10**8) for n in range(processes)]
        with ProcessPoolExecutor(max_workers=processes) as pool:
            results = list(pool.map(_load_in_process, jobs))
        ok = sum(n for n, _ in results)
        return ok / seconds, [x for _, times in results for x in times]
    finally:
        process.terminate()
        process.wait()


def _to_run_request(store_path: Path, interval: float, events: int) -> list[float]:
    """Seconds from each event's 200 to the sensor tick that asks for its run."""
    port = _free_port()
    process = _serve(store_path.parent / "receiver_app.py", port, store_path)
    url = f"http://127.0.0.1:{port}/webhooks/hubspot"
    store = EventStore(store_path)
    cursor = store.since(0, limit=10**9)[-1].seq if store.count() else 0
    acknowledged: dict[str, float] = {}
    waits: list[float] = []
    try:
        with httpx.Client(trust_env=False) as client:
            next_tick = time.monotonic() + interval
            for n in range(events):
                time.sleep(random.uniform(0, 2 * interval * 2 / events))
                body, headers = _delivery(url, 10**9 + n)
                client.post(url, content=body, headers=headers)
                acknowledged[str(10**9 + n)] = time.monotonic()
                while time.monotonic() >= next_tick:
                    cursor = _tick(store, cursor, acknowledged, waits)
                    next_tick += interval
            while acknowledged:
                time.sleep(max(0.0, next_tick - time.monotonic()))
                cursor = _tick(store, cursor, acknowledged, waits)
                next_tick += interval
    finally:
        process.terminate()
        process.wait()
    return waits


def _tick(store: EventStore, cursor: int, acknowledged: dict[str, float], waits: list[float]) -> int:
    now = time.monotonic()
    new = store.since(cursor, limit=10**6)
    plan = plan_runs(store, load_routes(), cursor=cursor, limit=10**6)
    if plan.runs:
        for event in new:
            if event.event_id in acknowledged:
                waits.append(now - acknowledged.pop(event.event_id))
    return plan.cursor


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8, help="connections per client process")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--interval", type=float, default=15.0, help="sensor interval (shipped: 15 s)")
    parser.add_argument("--events", type=int, default=40, help="events timed to their run request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="webhooks-bench-") as scratch:
        folder = Path(scratch)
        (folder / "hello_app.py").write_text(HELLO)
        (folder / "receiver_app.py").write_text(RECEIVER)
        hello, _ = _throughput(
            folder / "hello_app.py", folder / "unused.sqlite3", args.seconds, args.concurrency, args.processes
        )
        store = folder / "events.sqlite3"
        receiver, answer = _throughput(
            folder / "receiver_app.py", store, args.seconds, args.concurrency, args.processes
        )
        stored = EventStore(store).count()
        waits = _to_run_request(store, args.interval, args.events)
    print(f"command: uv run python bench/webhooks.py {' '.join(sys.argv[1:])}")
    print("| server | events/s | vs hello-world |")
    print("| --- | ---: | ---: |")
    print(f"| bare ASGI hello-world (uvicorn) | {hello:,.0f} | 1.00 |")
    print(f"| receiver (signature + durable store) | {receiver:,.0f} | {receiver / hello:.2f} |")
    print(f"receiver answer time: p50 {_pct(answer, 50) * 1000:.1f} ms, p95 {_pct(answer, 95) * 1000:.1f} ms")
    print(f"events stored: {stored:,} (each delivery a new event, all committed before the 200)")
    print(
        f"event to run request ({args.events} events, sensor every {args.interval:g} s): "
        f"p50 {_pct(waits, 50):.1f} s, p95 {_pct(waits, 95):.1f} s, max {max(waits):.1f} s"
    )


if __name__ == "__main__":
    main()
