"""A login request that opens a cookie session (SAP Business One ``B1SESSION``, Creatio ``.ASPXAUTH``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from crm_pipelines.connectors.auth.base import (
    AUTH_KINDS,
    CREDENTIAL_PLACEHOLDERS,
    MASK,
    AccessToken,
    Authenticator,
    AuthModel,
    CachedCredential,
    ConnectionSettings,
    CredentialVariable,
    Secret,
    TokenSender,
    answer_json,
)
from crm_pipelines.connectors.limits import AuthenticationError, ErrorContext, raise_for_status, redact
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.spec_base import SpecModel, ValueMatch, check_template, value_matches

__all__ = ["CsrfSpec", "SessionAuth", "SessionLogin"]


class CsrfSpec(SpecModel):
    """Send a session cookie's value back as a header (Creatio ``BPMCSRF``)."""

    header: str
    cookie: str


@AUTH_KINDS.register("session")
class SessionAuth(AuthModel):
    """A login request that opens a cookie session (SAP Business One ``B1SESSION``, Creatio ``.ASPXAUTH``)."""

    kind: Literal["session"] = "session"
    login_path: str
    body: dict[str, Any] = Field(description="JSON body template; string values may use {username} etc.")
    username_variable: str
    password_variable: str
    company_variable: str | None = None
    ttl_path: str | None = Field(
        default=None, description="Dotted path of the session lifetime in the answer."
    )
    ttl_unit: Literal["seconds", "minutes"] = "seconds"
    default_ttl_seconds: int = Field(default=1800, gt=0)
    refresh_margin_seconds: int = Field(default=60, ge=0)
    success: ValueMatch | None = Field(default=None, description="A 200 that fails this is a refusal.")
    csrf: CsrfSpec | None = None
    logout_path: str | None = None
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Static headers sent with the login and with every request of the session "
            "(Creatio: ForceUseSession: true)."
        ),
    )

    @field_validator("body")
    @classmethod
    def _body(cls, value: dict[str, Any]) -> dict[str, Any]:
        for item in value.values():
            if isinstance(item, str):
                check_template(item, CREDENTIAL_PLACEHOLDERS)
        return value

    def credential_variables(self) -> list[CredentialVariable]:
        company = [CredentialVariable("company", self.company_variable)] if self.company_variable else []
        return [
            *company,
            CredentialVariable("username", self.username_variable),
            CredentialVariable("password", self.password_variable, secret=True),
        ]

    def authenticator(self, *, connection: ConnectionSettings, context: ErrorContext) -> Authenticator:
        return SessionLogin(spec=self, connection=connection, context=context)


class SessionLogin(CachedCredential):
    """A login request that opens a cookie session (SAP Business One, Creatio).

    The cookies the login sets go back on every request; with ``csrf`` one cookie's value is also
    sent as a header, and the declared ``headers`` go with the login and every request. The session lives ``ttl_path`` of the answer (SAP: ``SessionTimeout`` minutes)
    or ``default_ttl_seconds``; it is renewed a margin before that and once on a 401.

    Args:
        spec: The system's auth declaration.
        connection: Base URL and credentials.
        context: Names the system in errors.
        clock: Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        *,
        spec: SessionAuth,
        connection: ConnectionSettings,
        context: ErrorContext,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spec = spec
        self._connection = connection
        self._login_url = connection.base_url.rstrip("/") + spec.login_path
        self._context = context
        super().__init__(endpoint=self._login_url, fingerprint=connection.fingerprint, clock=clock)

    def __repr__(self) -> str:
        return f"SessionLogin(login_url={self._login_url!r}, credentials={MASK!r})"

    def _body(self) -> dict[str, Any]:
        values = self._connection.placeholders()
        return {k: v.format(**values) if isinstance(v, str) else v for k, v in self._spec.body.items()}

    def _fetch(self, *, send: TokenSender, previous: AccessToken | None) -> AccessToken:
        body = self._body()

        def build() -> httpx.Request:
            headers = {**self._spec.headers, "Accept": "application/json"}
            return httpx.Request("POST", self._login_url, json=body, headers=headers)

        started = self._clock()
        response = send(build)
        raise_for_status(response=response, context=self._context, token_request=True)
        fix = f"check {' and '.join(self._context.credential_variables) or 'the credentials'}."
        answer = answer_json(response, self._context, "login", fix) if response.content else {}
        if self._spec.success is not None and not value_matches(answer, self._spec.success):
            message = next(
                (str(v) for k in ("Message", "message", "error_description") if (v := (answer or {}).get(k))),
                "the login was refused",
            )
            raise AuthenticationError(
                redact(f"{self._context.system_title}: login refused: {message}.", self._context.secrets),
                fix=fix,
            )
        cookies = {name: value for name, value in response.cookies.items()}
        if not cookies:
            raise AuthenticationError(
                f"{self._context.system_title}: the login set no session cookie.", fix=fix
            )
        cookie_header = "; ".join(f"{name}={value}" for name, value in cookies.items())
        # The declared headers travel with the session's cookies: the API wants them on every request.
        headers = {name: Secret(value) for name, value in self._spec.headers.items()}
        headers["Cookie"] = Secret(cookie_header)
        if self._spec.csrf is not None:
            csrf = cookies.get(self._spec.csrf.cookie)
            if csrf is None:
                raise AuthenticationError(
                    f"{self._context.system_title}: the login set no {self._spec.csrf.cookie} cookie.",
                    fix=fix,
                )
            headers[self._spec.csrf.header] = Secret(csrf)
        ttl = float(self._spec.default_ttl_seconds)
        if self._spec.ttl_path:
            found = resolve_path(answer, self._spec.ttl_path)
            with contextlib.suppress(ValueError):
                ttl = float(str(found)) * (60 if self._spec.ttl_unit == "minutes" else 1)
        return AccessToken(
            value=Secret(cookie_header),
            api_base_url=self._connection.base_url.rstrip("/"),
            refresh_at=self._refresh_at(started, ttl, float(self._spec.refresh_margin_seconds)),
            headers=headers,
        )
