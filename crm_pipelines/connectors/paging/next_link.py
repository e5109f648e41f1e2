"""The body names the next page's URL (Salesforce ``nextRecordsUrl``, OData ``@odata.nextLink``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urljoin

from pydantic import Field

from crm_pipelines.connectors.paging.base import PAGING_KINDS, PageRequest, Paginator, PagingModel
from crm_pipelines.connectors.paths import resolve_path

__all__ = ["NextLinkPaginator", "NextLinkPaging"]


@PAGING_KINDS.register("next_link")
class NextLinkPaging(PagingModel):
    """The response names the next page's URL (Salesforce ``nextRecordsUrl``, OData ``@odata.nextLink``)."""

    kind: Literal["next_link"] = "next_link"
    next_path: str = Field(
        description="Path of the next page's URL in the body (a dotted key matches whole)."
    )
    done_path: str | None = Field(default=None, description="Dotted path of a boolean 'no more pages'.")
    keep_params: bool = Field(
        default=False, description="Send the first request's query parameters again (the link lacks them)."
    )

    def paginator(self) -> NextLinkPaginator:
        return NextLinkPaginator(self)


class NextLinkPaginator(Paginator[NextLinkPaging]):
    """Follow a URL found in the body until a ``done`` flag is true or the link is absent.

    A relative link (SAP Business One's ``BusinessPartners?$skip=20``) resolves against the request
    that produced it. The link carries its own query (Salesforce, OData), so the first request's
    parameters are dropped unless ``keep_params``.
    """

    def __init__(self, spec: NextLinkPaging) -> None:
        super().__init__(spec)

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        if self.spec.done_path is not None and resolve_path(body, self.spec.done_path) is True:
            return None
        link = resolve_path(body, self.spec.next_path)
        if not isinstance(link, str) or not link:
            return None
        if not link.startswith(("/", "http://", "https://")):
            link = urljoin(previous.url, link)
        return PageRequest(
            url=link, params=previous.params if self.spec.keep_params else {}, headers=previous.headers
        )
