"""The delete guard: a read that would delete a large share of an object stops until someone confirms.

Keys missing from a listing look exactly like deleted records, whatever made them miss: a page the
API skipped, a proxy that answered with the previous page, a permission the integration user lost.
Before a new snapshot becomes complete, :func:`check_deletions` counts the records live in the
previous snapshot that the new one drops or flags deleted. When they pass the object's declared
share (``deletes.max_share``, default 5%) and count (``deletes.min_rows``), the extract stops with
the numbers: the snapshot is not marked complete, so no load, no watermark and no sync sees it.

An operator who has checked that the records really are gone runs ``crm-pipelines confirm-deletes
--source S --dataset D --count N`` (:func:`confirm_deletions`); the next read deleting at most ``N``
goes through, once. Mirror syncs guard the same way in Hightouch and Fivetran.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from crm_pipelines.lake import DELETED, LakePath, parquet_glob, reader, scan_parquet, write_text
from crm_pipelines.sql import quote_ident

__all__ = ["DeleteGuardTripped", "Deletions", "check_deletions", "confirm_deletions", "confirmation_file"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class DeleteGuardTripped(Exception):
    """A read would delete more of an object than its declaration allows without a confirmation."""


@dataclass(frozen=True)
class Deletions:
    """Records live in the previous snapshot and gone (absent or flagged deleted) from the new one."""

    live_before: int
    gone: int

    @property
    def share(self) -> float:
        return self.gone / self.live_before if self.live_before else 0.0


def confirmation_file(lake_dir: LakePath, source: str, dataset: str) -> LakePath:
    """Where a confirmation of ``source``/``dataset``'s next deletions is kept."""
    for name in (source, dataset):
        if not _NAME_RE.match(name) or name in (".", ".."):
            raise ValueError(f"not a source or dataset name: {name!r}")
    return lake_dir / "control" / "delete_confirmations" / source / f"{dataset}.json"


def confirm_deletions(*, lake_dir: LakePath, source: str, dataset: str, count: int, by: str) -> LakePath:
    """Let the next read of ``source``/``dataset`` delete up to ``count`` records, once."""
    if count < 0:
        raise ValueError("count must be zero or more")
    path = confirmation_file(lake_dir, source, dataset)
    write_text(
        path,
        json.dumps({"count": count, "by": by, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}),
    )
    return path


def count_deletions(*, previous: LakePath, new: LakePath, primary_key: Sequence[str]) -> Deletions:
    """Live records of ``previous`` (a snapshot folder) that ``new`` (a Parquet file) lacks or flags deleted."""
    keys = ", ".join(quote_ident(k) for k in primary_key)
    deleted = quote_ident(DELETED)
    prev = scan_parquet(parquet_glob(previous) if previous.is_dir() else previous)
    with reader() as con:
        new_names = {d[0] for d in con.execute(f"SELECT * FROM {scan_parquet(new)} LIMIT 0").description}
        prev_names = {d[0] for d in con.execute(f"SELECT * FROM {prev} LIMIT 0").description}
        live_prev = f"WHERE NOT coalesce({deleted}, false)" if DELETED in prev_names else ""
        live_new = f"WHERE NOT coalesce({deleted}, false)" if DELETED in new_names else ""
        row = con.execute(
            f"""
            WITH before AS (SELECT DISTINCT {keys} FROM {prev} {live_prev}),
                 after AS (SELECT DISTINCT {keys} FROM {scan_parquet(new)} {live_new})
            SELECT (SELECT count(*) FROM before),
                   (SELECT count(*) FROM before ANTI JOIN after USING ({keys}))
            """
        ).fetchone()
    assert row is not None
    return Deletions(live_before=int(row[0]), gone=int(row[1]))


def check_deletions(
    *,
    lake_dir: LakePath,
    source: str,
    dataset: str,
    previous: LakePath,
    new: LakePath,
    primary_key: Sequence[str],
    max_share: float,
    min_rows: int,
) -> Deletions:
    """Count what the new snapshot deletes, and stop when it is more than allowed and unconfirmed.

    Returns:
        The deletions (allowed: within the limits, or confirmed; a used confirmation is removed).

    Raises:
        DeleteGuardTripped: Too many deletions and no confirmation covering them.
    """
    deletions = count_deletions(previous=previous, new=new, primary_key=primary_key)
    if deletions.gone <= min_rows or deletions.share <= max_share:
        return deletions
    path = confirmation_file(lake_dir, source, dataset)
    confirmed = _confirmed_count(path)
    if confirmed is not None and deletions.gone <= confirmed:
        path.unlink(missing_ok=True)
        return deletions
    raise DeleteGuardTripped(
        f"{source} {dataset}: this read would delete {deletions.gone} of {deletions.live_before} live "
        f"records ({deletions.share:.1%}), more than the {max_share:.0%} its declaration allows. "
        "Nothing was loaded or deleted. If the records really are gone, confirm with "
        f"`crm-pipelines confirm-deletes --source {source} --dataset {dataset} --count {deletions.gone}` "
        "and run again; otherwise check the API user's permissions and the paging."
    )


def _confirmed_count(path: LakePath) -> int | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("count")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
