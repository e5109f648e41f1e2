"""Paginators (paging.py): (previous request, body, records, page size) -> next request, no HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from crm_pipelines.connectors.paging import (
    CursorPaginator,
    CursorPaging,
    KeysetPaginator,
    KeysetPaging,
    NextLinkPaginator,
    NextLinkPaging,
    OffsetPaginator,
    OffsetPaging,
    PageNumberPaginator,
    PageNumberPaging,
    PageRequest,
    Paginator,
    make_paginator,
)
from crm_pipelines.connectors.spec import load_system

# --- paginators: (paginator, previous request, body, records, page size) -> next request ------------

FIRST = PageRequest(url="/items", params={"limit": "2"}, headers={"X-Page": "h"})


@pytest.mark.parametrize(
    ("paginator", "previous", "body", "n_records", "expected"),
    [
        # next link (Salesforce)
        pytest.param(
            NextLinkPaginator(NextLinkPaging(next_path="nextRecordsUrl", done_path="done")),
            FIRST,
            {"done": False, "nextRecordsUrl": "/services/data/v62.0/query/01g-2000"},
            2,
            PageRequest(url="/services/data/v62.0/query/01g-2000", params={}, headers={"X-Page": "h"}),
            id="next-link-follows",
        ),
        pytest.param(
            NextLinkPaginator(NextLinkPaging(next_path="nextRecordsUrl", done_path="done")),
            FIRST,
            {"done": True, "nextRecordsUrl": "/stale"},
            2,
            None,
            id="next-link-done-wins",
        ),
        pytest.param(
            NextLinkPaginator(NextLinkPaging(next_path="nextRecordsUrl", done_path="done")),
            FIRST,
            {"done": False},
            2,
            None,
            id="next-link-absent",
        ),
        # cursor (HubSpot)
        pytest.param(
            CursorPaginator(CursorPaging(cursor_path="paging.next.after", cursor_param="after")),
            FIRST,
            {"paging": {"next": {"after": "NTI1", "link": "?after=NTI1"}}},
            2,
            PageRequest(url="/items", params={"limit": "2", "after": "NTI1"}, headers={"X-Page": "h"}),
            id="cursor-follows",
        ),
        pytest.param(
            CursorPaginator(CursorPaging(cursor_path="paging.next.after", cursor_param="after")),
            PageRequest(url="/items", params={"limit": "2", "after": "NTI1"}),
            {"paging": {"next": {"after": "OTk5"}}},
            2,
            PageRequest(url="/items", params={"limit": "2", "after": "OTk5"}),
            id="cursor-replaces-previous",
        ),
        pytest.param(
            CursorPaginator(CursorPaging(cursor_path="paging.next.after", cursor_param="after")),
            FIRST,
            {"results": []},
            0,
            None,
            id="cursor-no-paging-block",
        ),
        # offset
        pytest.param(
            OffsetPaginator(OffsetPaging()),
            PageRequest(url="/items", params={"offset": "0", "limit": "2"}),
            {},
            2,
            PageRequest(url="/items", params={"offset": "2", "limit": "2"}),
            id="offset-full-page-advances",
        ),
        pytest.param(
            OffsetPaginator(OffsetPaging()),
            PageRequest(url="/items", params={"offset": "4", "limit": "2"}),
            {},
            1,
            None,
            id="offset-short-page-stops",
        ),
        pytest.param(
            OffsetPaginator(OffsetPaging(total_path="meta.total")),
            PageRequest(url="/items", params={"offset": "2", "limit": "2"}),
            {"meta": {"total": 4}},
            2,
            None,
            id="offset-total-reached",
        ),
        pytest.param(
            OffsetPaginator(OffsetPaging(total_path="meta.total")),
            PageRequest(url="/items", params={"offset": "0", "limit": "2"}),
            {"meta": {"total": 5}},
            1,
            PageRequest(url="/items", params={"offset": "1", "limit": "2"}),
            id="offset-server-capped-page-continues-by-total",
        ),
        pytest.param(
            OffsetPaginator(OffsetPaging()),
            PageRequest(url="/items", params={"offset": "0", "limit": "2"}),
            {},
            0,
            None,
            id="offset-empty-stops",
        ),
        pytest.param(
            OffsetPaginator(OffsetPaging(offset_param="startIndex", start=1, total_path="$totalResults")),
            PageRequest(url="/items", params={"startIndex": "3", "limit": "2"}),
            {"$totalResults": 5},
            2,
            PageRequest(url="/items", params={"startIndex": "5", "limit": "2"}),
            id="offset-one-based-last-record-still-read",
        ),
        pytest.param(
            OffsetPaginator(OffsetPaging(offset_param="startIndex", start=1, total_path="$totalResults")),
            PageRequest(url="/items", params={"startIndex": "3", "limit": "2"}),
            {"$totalResults": 4},
            2,
            None,
            id="offset-one-based-total-reached",
        ),
        # page number
        pytest.param(
            PageNumberPaginator(PageNumberPaging()),
            PageRequest(url="/items", params={"page": "1"}),
            {},
            2,
            PageRequest(url="/items", params={"page": "2"}),
            id="page-number-advances",
        ),
        pytest.param(
            PageNumberPaginator(PageNumberPaging()),
            PageRequest(url="/items", params={"page": "3"}),
            {},
            1,
            None,
            id="page-number-short-page-stops",
        ),
        pytest.param(
            PageNumberPaginator(PageNumberPaging(start=0, total_pages_path="total_pages")),
            PageRequest(url="/items", params={"page": "2"}),
            {"total_pages": 3},
            2,
            None,
            id="page-number-zero-based-last-page",
        ),
        pytest.param(
            PageNumberPaginator(PageNumberPaging(total_pages_path="total_pages")),
            PageRequest(url="/items", params={"page": "1"}),
            {"total_pages": 3},
            2,
            PageRequest(url="/items", params={"page": "2"}),
            id="page-number-before-total",
        ),
    ],
)
def test_paginator_next_request(
    paginator: Paginator[Any], previous: PageRequest, body: Any, n_records: int, expected: PageRequest | None
) -> None:
    records = [{"id": str(i)} for i in range(n_records)]
    assert paginator.next_request(previous=previous, body=body, records=records, page_size=2) == expected


@pytest.mark.parametrize(
    ("paginator", "expected_params"),
    [
        pytest.param(NextLinkPaginator(NextLinkPaging(next_path="n")), {"q": "x"}, id="next-link"),
        pytest.param(
            CursorPaginator(CursorPaging(cursor_path="c", cursor_param="after")), {"q": "x"}, id="cursor"
        ),
        pytest.param(
            OffsetPaginator(OffsetPaging(start=0)), {"q": "x", "offset": "0", "limit": "50"}, id="offset"
        ),
        pytest.param(
            PageNumberPaginator(PageNumberPaging(start=1)), {"q": "x", "page": "1"}, id="page-number"
        ),
    ],
)
def test_paginator_first_request(paginator: Paginator[Any], expected_params: dict[str, str]) -> None:
    first = paginator.first_request(request=PageRequest(url="/items", params={"q": "x"}), page_size=50)
    assert dict(first.params) == expected_params


def test_offset_paging_walks_a_list_without_gaps_or_duplicates() -> None:
    rows = [str(i) for i in range(7)]
    paginator = make_paginator(spec=load_system(name="salesforce").paging)
    assert isinstance(paginator, NextLinkPaginator)
    offset = OffsetPaginator(OffsetPaging())
    request: PageRequest | None = offset.first_request(request=PageRequest(url="/items"), page_size=3)
    seen: list[str] = []
    while request is not None:
        start = int(request.params["offset"])
        page = rows[start : start + int(request.params["limit"])]
        seen += page
        request = offset.next_request(previous=request, body={}, records=page, page_size=3)
    assert seen == rows


def _keyset() -> KeysetPaginator:
    return KeysetPaginator(
        KeysetPaging(key_path="Id", filter_param="$filter", condition="Id gt {last}", limit_param="$top")
    )


def test_keyset_pages_add_the_last_key_to_the_request_filter() -> None:
    paginator = _keyset()
    first = paginator.first_request(
        request=PageRequest(url="/Account", params={"$filter": "ModifiedOn ge X", "$orderby": "Id asc"}),
        page_size=2,
    )
    assert dict(first.params) == {"$filter": "ModifiedOn ge X", "$orderby": "Id asc", "$top": "2"}
    second = paginator.next_request(previous=first, body={}, records=[{"Id": "a"}, {"Id": "b"}], page_size=2)
    assert second is not None
    assert second.params["$filter"] == "(ModifiedOn ge X) and Id gt b"
    # The condition replaces the previous page's: it is added to the first request's filter only.
    third = paginator.next_request(previous=second, body={}, records=[{"Id": "c"}, {"Id": "d"}], page_size=2)
    assert third is not None
    assert third.params["$filter"] == "(ModifiedOn ge X) and Id gt d"
    assert paginator.next_request(previous=third, body={}, records=[{"Id": "e"}], page_size=2) is None
    # A full read has no filter of its own: the condition stands alone.
    full = _keyset()
    start = full.first_request(request=PageRequest(url="/Account"), page_size=1)
    assert "$filter" not in start.params
    following = full.next_request(previous=start, body={}, records=[{"Id": "a"}], page_size=1)
    assert following is not None
    assert following.params["$filter"] == "Id gt a"
    with pytest.raises(ValueError, match="no key at 'Id'"):
        full.next_request(previous=start, body={}, records=[{"Name": "x"}], page_size=1)


def _walk(paginator: Paginator[Any], rows: list[str], delete_after_first_page: str) -> list[str]:
    """Read ``rows`` (sorted keys) page by page as a server would answer, deleting one row mid-read."""
    live = list(rows)
    request: PageRequest | None = paginator.first_request(request=PageRequest(url="/items"), page_size=3)
    seen: list[str] = []
    while request is not None:
        after = str(request.params.get("$filter", "")).rpartition("Id gt ")[2]
        matching = [r for r in live if not after or r > after]
        start = int(request.params.get("offset", 0))
        page = matching[start : start + 3] if after else live[start : start + 3]
        seen += page
        if delete_after_first_page in live and len(seen) == 3:
            live.remove(delete_after_first_page)  # a row already read is deleted: the rest shift
        request = paginator.next_request(
            previous=request, body={}, records=[{"Id": r} for r in page], page_size=3
        )
    return seen


def test_keyset_paging_misses_nothing_when_a_row_is_deleted_during_the_read() -> None:
    rows = [f"k{i}" for i in range(8)]
    assert _walk(_keyset(), rows, "k1") == rows
    # What offset paging does in the same situation: the row after the deleted one is never read.
    assert "k3" not in _walk(OffsetPaginator(OffsetPaging()), rows, "k1")


def test_keyset_paging_is_declared_with_a_condition_on_the_last_key() -> None:
    spec = KeysetPaging.model_validate(
        {"kind": "keyset", "key_path": "Id", "filter_param": "$filter", "condition": "Id gt {last}"}
    )
    assert isinstance(make_paginator(spec=spec), KeysetPaginator)
    with pytest.raises(ValueError, match="must use"):
        KeysetPaging.model_validate(
            {"kind": "keyset", "key_path": "Id", "filter_param": "$filter", "condition": "Id gt 0"}
        )
