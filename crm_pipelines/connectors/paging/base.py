"""What every paging kind is: a declaration model and a paginator made from it, found by ``kind``.

:class:`PageRequest` is one GET; :class:`Paginator` turns a page's answer into the next request, a
pure function of (previous request, response body, records on the page). A paging kind is a
:class:`PagingModel` (what ``paging:`` declares) registered in :data:`PAGING_KINDS` under its
``kind``, whose :meth:`~PagingModel.paginator` makes its paginator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from crm_pipelines.connectors.paths import MISSING
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.registry import DeclarationRegistry

__all__ = ["PAGING_KINDS", "NumberedPaginator", "PageRequest", "Paginator", "PagingModel", "as_int"]


@dataclass(frozen=True)
class PageRequest:
    """One GET: ``url`` is absolute or relative to the API base; params/headers already rendered."""

    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


class PagingModel(SpecModel):
    """What a ``paging:`` declaration is: its ``kind`` and the paginator it makes."""

    kind: str
    # Where a page reports how many records the whole listing holds (Salesforce ``totalSize``,
    # SData ``$totalResults``): a walk that ends with fewer is a fault, not a smaller object.
    total_path: str | None = None

    @abstractmethod
    def paginator(self) -> Paginator[Any]:
        """A new paginator for one walk through the pages (a keyset paginator keeps state)."""


# Every paging kind, by the ``kind`` a declaration names it with.
PAGING_KINDS: DeclarationRegistry[PagingModel] = DeclarationRegistry("paging kind", discriminator="kind")

SpecT = TypeVar("SpecT", bound=PagingModel)


class Paginator(ABC, Generic[SpecT]):
    """Turns a page's response into the next request, or ``None`` when there are no more pages.

    Args:
        spec: The paging declaration it follows.
    """

    def __init__(self, spec: SpecT) -> None:
        self.spec = spec

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        """Add the paging parameters the first request needs (most kinds need none).

        Args:
            request: The rendered first request.
            page_size: Records per page.

        Returns:
            The request to send first.
        """
        return request

    @abstractmethod
    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        """Return the request for the next page, or ``None`` after the last page.

        Args:
            previous: The request that produced ``body``.
            body: The decoded response body.
            records: The records found on that page.
            page_size: Records per page that were asked for.

        Returns:
            The next request or ``None``.
        """


class NumberedPaginator(Paginator[SpecT]):
    """A paginator whose n-th request is known before any answer arrives (offsets, page numbers), so
    the engine can keep ``concurrency`` pages in flight and stop at the count the first answer gives."""

    @property
    @abstractmethod
    def concurrency(self) -> int:
        """Page requests to keep in flight (1: one after another)."""

    @abstractmethod
    def nth_request(self, *, first: PageRequest, n: int, page_size: int) -> PageRequest:
        """The request of page ``n`` (0 = ``first``, the first request as sent)."""

    @abstractmethod
    def page_count(self, *, body: Any, page_size: int) -> int | None:
        """How many pages the first answer says there are, or None when it does not say."""


def as_int(value: Any) -> int | None:
    """A count read from a body (a number or its text), or None when absent or not a number."""
    if value is MISSING or value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value))
    except ValueError:
        return None
