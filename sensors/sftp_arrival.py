"""SFTP file-arrival sensors: one per declared drop, one run per complete file version.

A file version is its path plus the sha256 of its content. When a complete file shows a size and
mtime the sensor has not hashed yet, the sensor streams it once (nothing is stored) and keeps
``[size:mtime, sha256]`` per path in its JSON cursor, so later ticks cost one listing. A new
checksum adds the dynamic partition ``<name>@<sha256[:12]>`` to the drop's partitions and
requests a run of the drop's job for it with run key ``<path>@<sha256>``: the same content is
launched once whatever restarts happen (Dagster keeps run keys per sensor, and the ledger
``ops.file_ingest`` is keyed on path and sha256 too), a file touched without a content change is
not launched again, and a corrected file is a new version with its own partition.

Tick time: Dagster cancels a sensor evaluation after 60 s by default
(``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS``), and hashing means reading the whole file. Hashing
therefore gets :data:`CHECKSUM_BUDGET_SECONDS` per tick. A file that is not done by then keeps
its partial hash in the sensor's process and the next tick continues from the byte it reached
(if size and mtime are unchanged), so a 1 GB file on a slow link takes a few ticks instead of
failing every one; after a restart of the code server it starts over. Over loopback a 1 GB file
hashes in about 5 s. The price is one extra read of each file version; the alternative, naming
runs by size and mtime, could not give a partition per content version.
"""

import fnmatch
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from crm_pipelines.files.sftp import DEFAULT_MARKERS, DownloadError, FileListing, PartialChecksum
from crm_pipelines.jobs import SFTP_PATH_TAG, SFTP_SHA256_TAG, sftp_file_job_name
from crm_pipelines.partitions import file_version_key, file_versions_partitions
from crm_pipelines.sources import Dataset, load_sources
from resources.sftp import SFTPResource

DEFAULT_INTERVAL_SECONDS = 30
# Of Dagster's 60 s per tick: the rest is for connecting, listing and launching.
CHECKSUM_BUDGET_SECONDS = 40.0

# Hashes a tick could not finish, by sensor and path: continued by the next tick of this process.
_PARTIAL: dict[str, PartialChecksum] = {}

Cursor = dict[str, dict[str, list[object]]]


@dataclass(frozen=True)
class Arrival:
    """A complete file whose size and mtime the sensor has not hashed yet."""

    name: str
    path: str
    size: int
    mtime: float
    day: str

    @property
    def signature(self) -> str:
        return f"{self.size}:{int(self.mtime)}"


def find_arrivals(
    *,
    files: list[tuple[str, str, int, float]],
    declared: Dataset,
    cursor: Cursor,
    now: float,
    stable_seconds: float,
    ready: set[str] | None = None,
) -> tuple[list[Arrival], Cursor, list[str]]:
    """Which listed files are complete and not hashed in their current size and mtime.

    A file is complete when it is in ``ready`` (its drop's marker or rename rule said so), or when
    the sensor saw the same size and mtime on an earlier tick at least ``stable_seconds`` ago.

    Args:
        files: (name, path, size, mtime) of the drop's files.
        declared: The drop (its pattern gives each file's business day).
        cursor: ``{"pending": {path: [signature, first_seen]}, "versions": {path: [signature, sha256]}}``.
        now: Current time (seconds since the epoch).
        stable_seconds: How long a file must stay unchanged.
        ready: Paths known complete without a second look; None means "use the stable rule".

    Returns:
        The arrivals, the cursor with updated ``pending`` (files gone from the folder forgotten,
        so it does not grow forever), and notes on files that were ignored.
    """
    pending = dict(cursor.get("pending", {}))
    versions = dict(cursor.get("versions", {}))
    arrivals: list[Arrival] = []
    notes: list[str] = []
    listed = set()
    for name, path, size, mtime in files:
        day = declared.date_from_name(name)
        if day is None:
            notes.append(f"{name}: does not match {declared.pattern}")
            continue
        listed.add(path)
        arrival = Arrival(name, path, size, mtime, day)
        known = versions.get(path)
        if known is not None and known[0] == arrival.signature:
            continue
        seen = pending.get(path)
        stable = (
            seen is not None and seen[0] == arrival.signature and now - float(seen[1]) >= stable_seconds  # type: ignore[arg-type]
        )
        if (path in ready) if ready is not None else stable:
            arrivals.append(arrival)
            pending.pop(path, None)
        elif seen is None or seen[0] != arrival.signature:
            pending[path] = [arrival.signature, now]
    return (
        arrivals,
        {
            "pending": {p: v for p, v in pending.items() if p in listed},
            "versions": {p: v for p, v in versions.items() if p in listed},
        },
        notes,
    )


def plan_runs(
    *, arrivals: list[Arrival], checksums: Mapping[str, str], cursor: Cursor
) -> tuple[list[dg.RunRequest], list[str], Cursor, list[str]]:
    """Run requests and new partition keys for the arrivals whose checksum is known.

    Args:
        arrivals: From :func:`find_arrivals`.
        checksums: sha256 by path, for the arrivals hashed so far (the others wait a tick).
        cursor: The cursor :func:`find_arrivals` returned.

    Returns:
        Run requests (run key ``<path>@<sha256>``, partition ``<name>@<sha256[:12]>``), the
        partition keys to add, the new cursor, and notes.
    """
    versions = dict(cursor.get("versions", {}))
    pending = dict(cursor.get("pending", {}))
    requests: list[dg.RunRequest] = []
    keys: list[str] = []
    notes: list[str] = []
    for arrival in arrivals:
        sha256 = checksums.get(arrival.path)
        if sha256 is None:
            # Still hashing: keep it pending (it is complete; the next tick continues).
            pending[arrival.path] = [arrival.signature, 0]
            continue
        known = versions.get(arrival.path)
        versions[arrival.path] = [arrival.signature, sha256]
        if known is not None and known[1] == sha256:
            notes.append(
                f"{arrival.name}: touched, content unchanged (sha256 {sha256[:12]}); not launched again"
            )
            continue
        key = file_version_key(arrival.name, sha256)
        keys.append(key)
        requests.append(
            dg.RunRequest(
                run_key=f"{arrival.path}@{sha256}",
                partition_key=key,
                tags={SFTP_PATH_TAG: arrival.path, SFTP_SHA256_TAG: sha256},
            )
        )
    return requests, keys, {"pending": pending, "versions": versions}, notes


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
    source: str,
    dataset: str,
    declared: Dataset,
    job_name: str | None = None,
    name: str | None = None,
    minimum_interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    checksum_budget_seconds: float = CHECKSUM_BUDGET_SECONDS,
) -> dg.SensorDefinition:
    """The arrival sensor of one drop (``sftp_file_arrival__<source>__<dataset>``).

    Args:
        source: The drop's source in sources.yaml.
        dataset: The drop's dataset.
        declared: The drop.
        job_name: The job it launches (default: the drop's ``sftp_file_ingest__<source>__<dataset>``).
        name: Sensor name (default as above).
        minimum_interval_seconds: Time between ticks.
        checksum_budget_seconds: Hashing time per tick (see the module docstring).
    """
    pattern = (declared.pattern or "*").replace("{date}", "*")
    partitions = file_versions_partitions(source, dataset)
    sensor_name = name or f"sftp_file_arrival__{source}__{dataset}"

    @dg.sensor(
        name=sensor_name,
        job_name=job_name or sftp_file_job_name(source, dataset),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Launches one ingest run per new, completely written version of a {source}/{dataset} file "
            f"({declared.complete_when} rule), as a partition named by the file and its sha256."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, sftp: SFTPResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        folder = sftp.folder_of(declared.folder)
        checksums: dict[str, str] = {}
        hashing: list[str] = []
        with sftp.session() as session:
            everything = session.list_files(folder, "*")
            matching = [f for f in everything if fnmatch.fnmatchcase(f.name, pattern)]
            arrivals, cursor, notes = find_arrivals(
                files=[(f.name, f.path, f.size, f.mtime) for f in matching],
                declared=declared,
                cursor=cursor,
                now=time.time(),
                stable_seconds=sftp.stable_seconds,
                ready=_ready_paths(everything, declared, pattern),
            )
            deadline = time.monotonic() + checksum_budget_seconds
            hashed_some = False
            for arrival in arrivals:
                key = f"{sensor_name}|{arrival.path}"
                partial = _PARTIAL.pop(key, None)
                if partial is None or (partial.size, partial.mtime) != (arrival.size, arrival.mtime):
                    partial = PartialChecksum(size=arrival.size, mtime=arrival.mtime)
                # The first file always moves on (at least a block), so a tiny budget still ends.
                if time.monotonic() < deadline or not hashed_some:
                    hashed_some = True
                    try:
                        session.checksum(arrival.path, partial, deadline=deadline)
                    except FileNotFoundError:
                        notes.append(f"{arrival.name}: gone before it could be hashed")
                        continue
                    except DownloadError as exc:
                        notes.append(f"{arrival.name}: {exc}; hashing again on the next tick")
                        continue
                if partial.done:
                    checksums[arrival.path] = partial.hexdigest()
                else:
                    _PARTIAL[key] = partial
                    hashing.append(f"{arrival.name} ({partial.offset * 100 // max(partial.size, 1)}% hashed)")
        for refused in everything.rejected:
            context.log.warning(f"{folder}: refused {refused.name!r}: {refused.reason}")
        requests, keys, new_cursor, more_notes = plan_runs(
            arrivals=arrivals, checksums=checksums, cursor=cursor
        )
        for note in notes + more_notes:
            context.log.info(note)
        for request in requests:
            context.log.info(f"launching {request.partition_key} (run key {request.run_key})")
        skip = None
        if not requests:
            skip = _skip_reason(declared, folder, pattern, new_cursor, hashing, len(everything.rejected))
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps(new_cursor, sort_keys=True),
            dynamic_partitions_requests=[partitions.build_add_request(keys)] if keys else None,
            skip_reason=skip,
        )

    return _sensor


def _skip_reason(
    declared: Dataset, folder: str, pattern: str, cursor: Cursor, hashing: list[str], refused: int
) -> str:
    if hashing:
        return f"hashing {', '.join(hashing)}; continuing on the next tick"
    waiting = len(cursor["pending"])
    if waiting:
        rule = {
            "stable": "still being written or waiting for a second look",
            "marker": "waiting for their completion marker",
            "rename": "waiting",
        }[declared.complete_when]
        return f"{waiting} file(s) in {folder} {rule}"
    return f"no new {pattern} files in {folder}" + (f" ({refused} refused names)" if refused else "")


def build_sftp_arrival_sensors() -> list[dg.SensorDefinition]:
    """One arrival sensor per SFTP drop declared in sources.yaml, each launching its drop's job."""
    return [
        build_sftp_arrival_sensor(source=source, dataset=dataset, declared=declared)
        for source, spec in load_sources().items()
        if spec.kind == "sftp"
        for dataset, declared in spec.datasets.items()
    ]
