"""SFTP file-arrival sensor: one run per new, completely written file."""

import json
import time

import dagster as dg

from crm_pipelines.sources import load_sources
from resources.sftp import SFTPResource


def match_dataset(name: str) -> tuple[str, str, str] | None:
    """(source, dataset, partition date) of a file name that a declared SFTP drop expects."""
    for source, spec in load_sources().items():
        if spec.kind != "sftp":
            continue
        for dataset, declared in spec.datasets.items():
            day = declared.date_from_name(name)
            if day is not None:
                return source, dataset, day
    return None


def evaluate_arrivals(
    *,
    files: list[tuple[str, str, int, float]],
    cursor: dict[str, dict[str, list[object]]],
    now: float,
    stable_seconds: float,
) -> tuple[list[dg.RunRequest], dict[str, dict[str, list[object]]], list[str]]:
    """Decide which listed files are complete and new.

    A file is complete when the sensor saw the same size and mtime on an earlier tick at least
    ``stable_seconds`` ago; it is new when that signature was not launched before.

    Args:
        files: (name, path, size, mtime) of every file in the drop folder.
        cursor: ``{"pending": {path: [signature, first_seen]}, "launched": {path: [signature]}}``.
        now: Current time (seconds since the epoch).
        stable_seconds: How long a file must stay unchanged.

    Returns:
        Run requests, the new cursor, and notes on files that were ignored.
    """
    pending = dict(cursor.get("pending", {}))
    launched = dict(cursor.get("launched", {}))
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    listed = set()
    for name, path, size, mtime in files:
        match = match_dataset(name)
        if match is None:
            notes.append(f"{name}: matches no declared drop")
            continue
        source, dataset, day = match
        listed.add(path)
        signature = f"{size}:{int(mtime)}"
        if launched.get(path) == [signature]:
            continue
        seen = pending.get(path)
        if seen is not None and seen[0] == signature and now - float(seen[1]) >= stable_seconds:  # type: ignore[arg-type]
            requests.append(
                dg.RunRequest(
                    run_key=f"{path}:{signature}",
                    partition_key=day,
                    tags={"crm_pipelines/sftp_path": path, "crm_pipelines/dataset": f"{source}/{dataset}"},
                )
            )
            launched[path] = [signature]
            pending.pop(path, None)
        elif seen is None or seen[0] != signature:
            pending[path] = [signature, now]
    # Forget files that left the folder, so the cursor does not grow forever.
    pending = {p: v for p, v in pending.items() if p in listed}
    return requests, {"pending": pending, "launched": launched}, notes


def build_sftp_arrival_sensor(*, job_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name="sftp_file_arrival",
        job_name=job_name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches one ingest run per new, completely written file in the SFTP finance drop.",
    )
    def _sensor(context: dg.SensorEvaluationContext, sftp: SFTPResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        with sftp.session() as session:
            listed = session.list_files(sftp.finance_dir, "*")
        files = [(f.name, f.path, f.size, f.mtime) for f in listed]
        requests, new_cursor, notes = evaluate_arrivals(
            files=files, cursor=cursor, now=time.time(), stable_seconds=sftp.stable_seconds
        )
        for note in notes:
            context.log.info(note)
        skip = None
        if not requests:
            waiting = len(new_cursor["pending"])
            skip = (
                f"{waiting} file(s) still being written or waiting for a second look"
                if waiting
                else f"no new files in {sftp.finance_dir}"
            )
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps(new_cursor, sort_keys=True), skip_reason=skip
        )

    return _sensor
