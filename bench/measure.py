"""Shared by the benchmarks: peak resident memory sampled while a block runs."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRss:
    """Samples this process's resident memory every ``interval`` seconds and keeps the maximum.

    Use as a context manager; ``peak`` (bytes) is final after the block.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = psutil.Process().memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
