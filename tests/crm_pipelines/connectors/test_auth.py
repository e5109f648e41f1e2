"""Credentials and authenticators (auth.py): secrets that do not print, token caching, session logins."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from crm_pipelines.connectors.auth import (
    ConnectionSettings,
    OAuth2ClientCredentials,
    Secret,
    SessionLogin,
    clear_token_cache,
)
from crm_pipelines.connectors.limits import ErrorContext, redact
from crm_pipelines.connectors.spec import SessionAuth, load_system

CONTEXT = ErrorContext(system_name="salesforce", system_title="Salesforce", object_name="Contact")
SALESFORCE = load_system(name="salesforce")


def test_secrets_do_not_print() -> None:
    connection = ConnectionSettings(
        base_url="https://login.example.com/",
        client_id="cid",
        client_secret="s3cr3t-value",
        access_token="tok-123456",
    )
    for text in (
        repr(connection),
        str(connection),
        repr(connection.client_secret),
        f"{connection.access_token}",
    ):
        assert "s3cr3t-value" not in text
        assert "tok-123456" not in text
    assert connection.base_url == "https://login.example.com"
    assert connection.client_secret == Secret("s3cr3t-value")
    assert redact("token tok-123456 and s3cr3t-value", connection.secret_values()) == "token *** and ***"


def test_oauth_token_is_cached_and_refreshed_before_expiry() -> None:
    now = [1000.0]
    answers = iter([{"expires_in": 100}, {}, {}])
    sent: list[httpx.Request] = []

    def send(build: Callable[[], httpx.Request]) -> httpx.Response:
        request = build()
        sent.append(request)
        body = {
            "access_token": f"tok-{len(sent)}",
            "instance_url": "https://na1.example.com",
            **next(answers),
        }
        return httpx.Response(200, json=body, request=request)

    auth = OAuth2ClientCredentials(
        spec=SALESFORCE.auth,  # type: ignore[arg-type]
        base_url="https://login.example.com",
        client_id="cid",
        client_secret=Secret("s3cr3t-value"),
        context=CONTEXT,
        clock=lambda: now[0],
    )
    first = auth.token(send=send)
    assert first.value.reveal() == "tok-1"
    assert first.api_base_url == "https://na1.example.com"
    assert sent[0].url == "https://login.example.com/services/oauth2/token"
    assert b"grant_type=client_credentials" in sent[0].content
    assert b"client_secret=s3cr3t-value" in sent[0].content
    now[0] += 40
    assert auth.token(send=send) is first  # cached
    now[0] += 15  # expires_in 100, refreshed at half-life for short lifetimes
    second = auth.token(send=send)
    assert second.value.reveal() == "tok-2"
    auth.invalidate(token=first)  # a stale 401 must not throw away the newer token
    assert auth.token(send=send) is second
    auth.invalidate(token=second)
    assert auth.token(send=send).value.reveal() == "tok-3"
    assert "s3cr3t-value" not in repr(auth)
    assert "tok-" not in repr(second)


def test_session_login_sends_the_declared_headers_on_the_login_and_every_request() -> None:
    spec = SessionAuth.model_validate(
        {
            "kind": "session",
            "login_path": "/ServiceModel/AuthService.svc/Login",
            "body": {"UserName": "{username}", "UserPassword": "{password}"},
            "username_variable": "U",
            "password_variable": "P",
            "success": {"path": "Code", "equals": 0},
            "csrf": {"header": "BPMCSRF", "cookie": "BPMCSRF"},
            "headers": {"ForceUseSession": "true"},
        }
    )
    sent: list[httpx.Request] = []

    def send(build: Callable[[], httpx.Request]) -> httpx.Response:
        request = build()
        sent.append(request)
        cookies = [("set-cookie", ".ASPXAUTH=abc123; path=/"), ("set-cookie", "BPMCSRF=csrf-9; path=/")]
        return httpx.Response(200, json={"Code": 0}, headers=cookies, request=request)

    clear_token_cache()
    login = SessionLogin(
        spec=spec,
        connection=ConnectionSettings(
            base_url="https://acme.creatio.com", username="u", password="pw-secret"
        ),
        context=CONTEXT,
    )
    token = login.token(send=send)
    assert sent[0].headers["ForceUseSession"] == "true"
    headers = {name: value.reveal() for name, value in token.headers.items()}
    assert headers["ForceUseSession"] == "true"
    assert headers["BPMCSRF"] == "csrf-9"
    assert ".ASPXAUTH=abc123" in headers["Cookie"]
    clear_token_cache()
