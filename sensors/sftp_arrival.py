"""SFTP file-arrival sensors: one per declared drop, one run per new, completely written file.

Why the run key is path + size + mtime and not path + sha256: the checksum needs the whole file,
and a sensor tick must stay cheap (a 1 GB drop would be downloaded every 30 s just to be named).
The run verifies the sha256 instead: the extract hashes while downloading and the ledger
``ops.file_ingest`` is keyed on (path, sha256), so a file re-touched with the same content is never
ingested twice, and a corrected file (new size or mtime) gets a new run key and a new version.
"""

import fnmatch
import json
import time

import dagster as dg

from crm_pipelines.files.sftp import DEFAULT_MARKERS, FileListing
from crm_pipelines.jobs import SFTP_DATASET_TAG, SFTP_PATH_TAG
from crm_pipelines.sources import Dataset, load_sources
from resources.sftp import SFTPResource

DEFAULT_INTERVAL_SECONDS = 30


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
    ready: set[str] | None = None,
) -> tuple[list[dg.RunRequest], dict[str, dict[str, list[object]]], list[str]]:
    """Decide which listed files are complete and new.

    A file is complete when it is in ``ready`` (its drop's marker or rename rule said so), or when
    the sensor saw the same size and mtime on an earlier tick at least ``stable_seconds`` ago; it
    is new when that signature was not launched before.

    Args:
        files: (name, path, size, mtime) of every file in the drop folder.
        cursor: ``{"pending": {path: [signature, first_seen]}, "launched": {path: [signature]}}``.
        now: Current time (seconds since the epoch).
        stable_seconds: How long a file must stay unchanged.
        ready: Paths known complete without a second look; None means "use the stable rule".

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
        stable = seen is not None and seen[0] == signature and now - float(seen[1]) >= stable_seconds  # type: ignore[arg-type]
        complete = path in ready if ready is not None else stable
        if complete:
            requests.append(
                dg.RunRequest(
                    run_key=f"{path}:{signature}",
                    partition_key=day,
                    tags={SFTP_PATH_TAG: path, SFTP_DATASET_TAG: f"{source}/{dataset}"},
                )
            )
            launched[path] = [signature]
            pending.pop(path, None)
        elif seen is None or seen[0] != signature:
            pending[path] = [signature, now]
    # Forget files that left the folder (moved to processed), so the cursor does not grow forever.
    pending = {p: v for p, v in pending.items() if p in listed}
    launched = {p: v for p, v in launched.items() if p in listed}
    return requests, {"pending": pending, "launched": launched}, notes


def _ready_paths(listing: FileListing, declared: Dataset, pattern: str) -> set[str] | None:
    """Paths the drop's marker or rename rule says are complete (None for the stable rule)."""
    if declared.complete_when == "rename":
        # list_files already leaves out *.tmp, *.part and *.filepart.
        return {f.path for f in listing}
    if declared.complete_when == "marker":
        names = {f.name for f in listing}
        markers = tuple(declared.markers) or DEFAULT_MARKERS
        return {
            f.path
            for f in listing
            if fnmatch.fnmatchcase(f.name, pattern) and any(f"{f.name}{m}" in names for m in markers)
        }
    return None


def build_sftp_arrival_sensor(
    *,
    job_name: str,
    source: str,
    dataset: str,
    declared: Dataset,
    name: str | None = None,
    minimum_interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The arrival sensor of one drop (``sftp_file_arrival__<source>__<dataset>``)."""
    pattern = (declared.pattern or "*").replace("{date}", "*")

    @dg.sensor(
        name=name or f"sftp_file_arrival__{source}__{dataset}",
        job_name=job_name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Launches one ingest run per new, completely written {source}/{dataset} file "
            f"({declared.complete_when} rule)."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, sftp: SFTPResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        folder = sftp.folder_of(declared.folder)
        with sftp.session() as session:
            everything = session.list_files(folder, "*")
        for refused in everything.rejected:
            context.log.warning(f"{folder}: refused {refused.name!r}: {refused.reason}")
        matching = [f for f in everything if fnmatch.fnmatchcase(f.name, pattern)]
        requests, new_cursor, notes = evaluate_arrivals(
            files=[(f.name, f.path, f.size, f.mtime) for f in matching],
            cursor=cursor,
            now=time.time(),
            stable_seconds=sftp.stable_seconds,
            ready=_ready_paths(everything, declared, pattern),
        )
        for note in notes:
            context.log.info(note)
        skip = None
        if not requests:
            waiting = len(new_cursor["pending"])
            rule = {
                "stable": "still being written or waiting for a second look",
                "marker": "waiting for their completion marker",
                "rename": "waiting",
            }[declared.complete_when]
            skip = (
                f"{waiting} file(s) in {folder} {rule}"
                if waiting
                else f"no new {pattern} files in {folder}"
                + (f" ({len(everything.rejected)} refused names)" if everything.rejected else "")
            )
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps(new_cursor, sort_keys=True), skip_reason=skip
        )

    return _sensor


def build_sftp_arrival_sensors(*, job_name: str) -> list[dg.SensorDefinition]:
    """One arrival sensor per SFTP drop declared in sources.yaml."""
    return [
        build_sftp_arrival_sensor(job_name=job_name, source=source, dataset=dataset, declared=declared)
        for source, spec in load_sources().items()
        if spec.kind == "sftp"
        for dataset, declared in spec.datasets.items()
    ]
