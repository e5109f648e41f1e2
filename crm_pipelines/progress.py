"""Progress lines for long stages, visible in the terminal and in the Dagster run log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import pyarrow as pa


class ProgressLog:
    """Log ``label: N rows (R rows/s)`` at most every ``every_seconds`` while rows stream through.

    Args:
        log: The step's logger (``context.log``) or any ``logging.Logger``; None logs to
            ``crm_pipelines``.
        label: What is moving, e.g. ``salesforce/contacts``.
        every_seconds: Minimum time between two lines.
    """

    def __init__(
        self,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None,
        label: str,
        every_seconds: float = 5.0,
    ) -> None:
        self.log = log if log is not None else logging.getLogger("crm_pipelines")
        self.label = label
        self.every = every_seconds
        self.rows = 0
        self.started = time.monotonic()
        self._last = self.started

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.log.info(f"{self.label}: {self.rows:,} rows so far ({self.rate:,.0f} rows/s)")

    def counted(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Pass batches through, counting their rows."""
        for batch in batches:
            self.add(batch.num_rows)
            yield batch

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.rows / max(self.seconds, 1e-9)

    def done(self) -> str:
        line = f"{self.label}: {self.rows:,} rows in {self.seconds:.1f}s ({self.rate:,.0f} rows/s)"
        self.log.info(line)
        return line
