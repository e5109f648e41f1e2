"""What every paginator is: a pure function of (previous request, response body, records on the page).

:class:`PageRequest` is one GET; :class:`Paginator` turns a page's answer into the next request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crm_pipelines.connectors.paths import MISSING

__all__ = ["PageRequest", "Paginator", "as_int"]


@dataclass(frozen=True)
class PageRequest:
    """One GET: ``url`` is absolute or relative to the API base; params/headers already rendered."""

    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


class Paginator(ABC):
    """Turns a page's response into the next request, or ``None`` when there are no more pages."""

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


def as_int(value: Any) -> int | None:
    """A count read from a body (a number or its text), or None when absent or not a number."""
    if value is MISSING or value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value))
    except ValueError:
        return None
