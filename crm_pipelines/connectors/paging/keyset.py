"""Each page asks for the rows after the last key read (``$filter=(...) and Id gt <last>``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, field_validator

from crm_pipelines.connectors.paging.base import PAGING_KINDS, PageRequest, Paginator, PagingModel
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.spec_base import check_template, placeholders

__all__ = ["KeysetPaginator", "KeysetPaging"]


@PAGING_KINDS.register("keyset")
class KeysetPaging(PagingModel):
    """Each page asks for the rows after the last key read (``$filter=Id gt <last>``, ordered by ``Id``).

    Unlike an offset, the position survives rows deleted or inserted before it while the read runs, so
    no row is skipped or read twice. The request must order by the key, ascending; stops on a short or
    empty page.
    """

    kind: Literal["keyset"] = "keyset"
    key_path: str = Field(description="Dotted path of the key in a record, e.g. 'Id'.")
    filter_param: str = Field(description="Query parameter the condition is added to, e.g. '$filter'.")
    condition: str = Field(
        description="Rows after the last key: a template with {last}, e.g. 'Id gt {last}'."
    )
    join: str = Field(
        default=" and ", description="Joins the request's own filter (parenthesised) and the condition."
    )
    limit_param: str | None = Field(default=None, description="Query parameter for the page size ($top).")

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str) -> str:
        if "last" not in placeholders(check_template(value, frozenset({"last"}))):
            raise ValueError(f"condition {value!r} must use {{last}}")
        return value

    def paginator(self) -> KeysetPaginator:
        return KeysetPaginator(self)


class KeysetPaginator(Paginator[KeysetPaging]):
    """Rows after the last key read: ``({filter}) and Id gt <last>``; the request orders by the key.

    An offset counts rows, so a row deleted before the offset during the read shifts the rest and
    the next page skips one; the last key does not move. Stops on a short or empty page.
    """

    def __init__(self, spec: KeysetPaging) -> None:
        super().__init__(spec)
        self._base: str | None = None

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        # Every later page adds its condition to this filter (the window of an incremental read).
        self._base = request.params.get(self.spec.filter_param, "")
        if self.spec.limit_param is None:
            return request
        return replace(request, params={**request.params, self.spec.limit_param: str(page_size)})

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        if not records or len(records) < page_size:
            return None
        last = resolve_path(records[-1], self.spec.key_path)
        if last is MISSING or last is None or isinstance(last, dict | list):
            raise ValueError(f"keyset paging: the last record of a page has no key at {self.spec.key_path!r}")
        base = self._base if self._base is not None else previous.params.get(self.spec.filter_param, "")
        after = self.spec.condition.format(last=last)
        value = f"({base}){self.spec.join}{after}" if base else after
        return replace(previous, params={**previous.params, self.spec.filter_param: value})
