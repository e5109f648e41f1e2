"""What a read method is: another way to read a pass than walking its declared pages.

An object may declare how else it is read: a Salesforce Bulk API job for big windows (``bulk``),
HubSpot search for incremental windows (``search``), change tracking (``incremental.delta``). Each
such way is a :class:`ReadMethod` registered in :data:`READ_METHODS`. For every pass of an extract
the engine asks them, lowest ``precedence`` first, whether they take it (:func:`read_method_for`);
the first that does reads it, and when none does the pass's pages are walked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pyarrow as pa

from crm_pipelines.connectors.collect import Collector, Pass
from crm_pipelines.connectors.limits import ErrorContext
from crm_pipelines.connectors.pages import PageCounter
from crm_pipelines.connectors.session import Session
from crm_pipelines.connectors.spec import ObjectSpec, SystemSpec
from crm_pipelines.registry import Registry

__all__ = ["READ_METHODS", "ObjectRead", "ReadMethod", "read_method_for"]


@dataclass(frozen=True)
class ObjectRead:
    """One extract of one object: what every way of reading its passes needs."""

    session: Session
    system: SystemSpec
    obj: ObjectSpec  # the declaration, with fields declared by label resolved
    object_name: str
    context: ErrorContext
    values: Mapping[str, Any]  # the request placeholders of this window
    size: int  # records per page
    since: datetime | None  # the window, UTC
    until: datetime | None
    delta_link: str | None  # where the last change-tracked read ended
    collector: Collector
    pages: PageCounter
    pages_per_batch: int


class ReadMethod(ABC):
    """A way to read a pass other than walking its pages, chosen by what the object declares."""

    # Asked before the methods with a higher number: change tracking replaces the window (10), a
    # Bulk job reads a big window (20), search reads the live pass of a window (30).
    precedence: ClassVar[int]

    @abstractmethod
    def takes(self, read: ObjectRead, run: Pass) -> bool:
        """Whether this method reads ``run`` (it may ask the API: a Bulk read sizes the window first)."""

    @abstractmethod
    def extract(self, read: ObjectRead, run: Pass) -> Iterator[pa.RecordBatch]:
        """Read ``run`` through the object's collector and page counter."""


# Every read method, by the name it reports in ExtractStats.method.
READ_METHODS: Registry[ReadMethod] = Registry("read method")


def read_method_for(read: ObjectRead, run: Pass) -> tuple[str, ReadMethod] | None:
    """The name and method that read ``run``, or None when its pages are walked."""
    for name, method in sorted(READ_METHODS.items(), key=lambda item: item[1].precedence):
        if method.takes(read, run):
            return name, method
    return None
