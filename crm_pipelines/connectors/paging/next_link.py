"""The body names the next page's URL (Salesforce ``nextRecordsUrl``, OData ``@odata.nextLink``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urljoin

from pydantic import Field

from crm_pipelines.connectors.paging.base import PageRequest, Paginator
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.spec_base import SpecModel

__all__ = ["NextLinkPaginator", "NextLinkPaging"]


class NextLinkPaging(SpecModel):
    """The response names the next page's URL (Salesforce ``nextRecordsUrl``, OData ``@odata.nextLink``)."""

    kind: Literal["next_link"]
    next_path: str = Field(
        description="Path of the next page's URL in the body (a dotted key matches whole)."
    )
    done_path: str | None = Field(default=None, description="Dotted path of a boolean 'no more pages'.")
    keep_params: bool = Field(
        default=False, description="Send the first request's query parameters again (the link lacks them)."
    )


class NextLinkPaginator(Paginator):
    """Follow a URL found in the body until a ``done`` flag is true or the link is absent.

    A relative link (SAP Business One's ``BusinessPartners?$skip=20``) resolves against the request
    that produced it. The link carries its own query (Salesforce, OData), so the first request's
    parameters are dropped unless ``keep_params``.
    """

    def __init__(self, *, next_path: str, done_path: str | None = None, keep_params: bool = False) -> None:
        self.next_path = next_path
        self.done_path = done_path
        self.keep_params = keep_params

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        if self.done_path is not None and resolve_path(body, self.done_path) is True:
            return None
        link = resolve_path(body, self.next_path)
        if not isinstance(link, str) or not link:
            return None
        if not link.startswith(("/", "http://", "https://")):
            link = urljoin(previous.url, link)
        return PageRequest(
            url=link, params=previous.params if self.keep_params else {}, headers=previous.headers
        )
