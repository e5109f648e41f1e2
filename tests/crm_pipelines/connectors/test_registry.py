"""Registries (registry.py): protocols found by the name a declaration gives them."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from crm_pipelines.connectors.auth import AUTH_KINDS, SessionAuth
from crm_pipelines.connectors.cursor_formats import CURSOR_FORMATS
from crm_pipelines.connectors.paging import PAGING_KINDS, CursorPaging
from crm_pipelines.connectors.reads import READ_METHODS
from crm_pipelines.connectors.writes import UPSERT_STYLES, PerRecordUpsert
from crm_pipelines.registry import DeclarationRegistry, Registry, UnknownKindError


def test_an_unknown_name_is_named_with_the_known_ones() -> None:
    formats: Registry[str] = Registry("greeting")
    formats.register("hello")("Hello")
    formats.add("hi", "Hi")
    assert formats.get("hi") == "Hi"
    assert formats.names() == ["hello", "hi"]
    with pytest.raises(UnknownKindError, match="unknown greeting 'hey'; known: hello, hi"):
        formats.get("hey")
    with pytest.raises(ValueError, match="greeting 'hi' is already registered"):
        formats.add("hi", "Hi!")


class _Ping(BaseModel):
    kind: Literal["ping"] = "ping"


class _Pong(BaseModel):
    kind: Literal["pong"] = "pong"
    loud: bool = False


def test_declarations_register_under_their_discriminator_and_make_one_union() -> None:
    kinds: DeclarationRegistry[BaseModel] = DeclarationRegistry("noise", discriminator="kind")
    kinds.register("ping")(_Ping)
    with pytest.raises(TypeError, match="must be Literal\\['pang'\\]"):
        kinds.register("pang")(_Pong)
    kinds.register("pong")(_Pong)

    class Declared(BaseModel):
        noise: kinds.union()  # type: ignore[valid-type]

    assert Declared.model_validate({"noise": {"kind": "pong", "loud": True}}).noise == _Pong(loud=True)
    with pytest.raises(ValidationError, match="'ping', 'pong'"):
        Declared.model_validate({"noise": {"kind": "pang"}})


def test_every_bundled_kind_is_registered() -> None:
    assert PAGING_KINDS.names() == ["cursor", "keyset", "next_link", "offset", "page_number", "single"]
    assert PAGING_KINDS.get("cursor") is CursorPaging
    assert sorted(AUTH_KINDS.names()) == [
        "api_key",
        "basic",
        "bearer",
        "oauth2_client_credentials",
        "oauth2_password",
        "oauth2_refresh_token",
        "session",
    ]
    assert AUTH_KINDS.get("session") is SessionAuth
    assert sorted(UPSERT_STYLES.names()) == [
        "collection_item",
        "hubspot_batch",
        "json_batch",
        "odata_batch",
        "per_record",
        "sobject_collections",
        "subrequests",
    ]
    assert UPSERT_STYLES.get("per_record") is PerRecordUpsert
    assert CURSOR_FORMATS.names() == [
        "soql_datetime",
        "iso8601",
        "iso8601_seconds",
        "iso8601_offset",
        "sql_datetime",
        "date",
        "epoch_ms",
        "epoch_seconds",
        "sdata",
    ]


def test_read_methods_are_asked_change_tracking_first_then_bulk_then_search() -> None:
    ordered = sorted(READ_METHODS.items(), key=lambda item: item[1].precedence)
    assert [name for name, _ in ordered] == ["delta", "bulk", "search"]
