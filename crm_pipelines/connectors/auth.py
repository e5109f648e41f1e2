"""Credentials and authenticators: every auth kind a system can declare.

* OAuth 2.0 client credentials, refresh token and password grants (:class:`OAuth2Token`);
* cookie sessions opened by a login request (:class:`SessionLogin`: SAP Business One, Creatio);
* static credentials: bearer tokens, API keys in a header or the query, HTTP Basic (:class:`StaticCredential`).

Secrets are held in :class:`Secret`, whose ``repr``/``str`` never show the value; the only way to
the value is :meth:`Secret.reveal`, called when a request header or token form is built.

Tokens and sessions are cached per endpoint and credential (process-wide, so parallel steps against
the same account share one), renewed shortly before they expire, and renewed once when the API
answers 401 (a session revoked or timed out early).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from crm_pipelines.connectors.limits import (
    AuthenticationError,
    ErrorContext,
    credential_fingerprint,
    raise_for_status,
    redact,
    suggest_fix,
)
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.spec import (
    ApiKeyAuth,
    BasicAuth,
    BearerTokenAuth,
    OAuth2ClientCredentialsAuth,
    OAuth2PasswordAuth,
    OAuth2RefreshTokenAuth,
    SessionAuth,
    SystemSpec,
)
from crm_pipelines.connectors.spec_base import value_matches

log = logging.getLogger(__name__)

_MASK = "***"


class Secret:
    """A string that does not print itself.

    Args:
        value: The secret value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the raw value; call only where it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        # Constant-time compare: equality of secrets should not leak through timing.
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def _as_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


_SECRET_FIELDS = ("client_secret", "access_token", "refresh_token", "password")


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    """Where and as whom to connect; plain strings given for secrets are wrapped in :class:`Secret`.

    Which fields a system needs is declared by its auth kind (see ``spec.credential_variables``).

    Args:
        base_url: API base URL (Salesforce: the login/My Domain URL; HubSpot: https://api.hubapi.com).
        token_url: Absolute token endpoint when the identity provider lives elsewhere (Entra ID, Zoho).
        client_id: OAuth client id.
        client_secret: OAuth client secret.
        access_token: Static token or API key (HubSpot private app, Pipedrive API token).
        refresh_token: OAuth refresh token (Zoho).
        username: User name (password grant, Basic, session login).
        password: Password.
        company: Company database of a session login (SAP Business One CompanyDB).
        timeout_seconds: Per-request timeout; ``None`` uses the system's declared timeout.
        verify: TLS verification: ``True`` (default, system CAs via certifi) or a CA bundle path
            (e.g. a corporate proxy's); never turned off by the engine itself.
    """

    base_url: str
    token_url: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    access_token: Secret | None = None
    refresh_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    company: str | None = None
    timeout_seconds: float | None = None
    verify: bool | str = True
    _fingerprint: str = field(init=False, default="", compare=False)

    def __init__(
        self,
        *,
        base_url: str,
        token_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | Secret | None = None,
        access_token: str | Secret | None = None,
        refresh_token: str | Secret | None = None,
        username: str | None = None,
        password: str | Secret | None = None,
        company: str | None = None,
        timeout_seconds: float | None = None,
        verify: bool | str = True,
    ) -> None:
        object.__setattr__(self, "base_url", base_url.strip().rstrip("/"))
        object.__setattr__(self, "token_url", token_url.strip() if token_url else None)
        object.__setattr__(self, "client_id", client_id)
        object.__setattr__(self, "client_secret", _as_secret(client_secret))
        object.__setattr__(self, "access_token", _as_secret(access_token))
        object.__setattr__(self, "refresh_token", _as_secret(refresh_token))
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", _as_secret(password))
        object.__setattr__(self, "company", company)
        object.__setattr__(self, "timeout_seconds", timeout_seconds)
        object.__setattr__(self, "verify", verify)
        parts = [client_id, username, company, *self.secret_values(keep_empty=True)]
        object.__setattr__(self, "_fingerprint", credential_fingerprint(parts=parts))

    @property
    def fingerprint(self) -> str:
        """One-way digest of the credential: identifies the account for shared rate limits."""
        return self._fingerprint

    def secret(self, name: str) -> Secret | None:
        value = getattr(self, name)
        assert value is None or isinstance(value, Secret)
        return value

    def secret_values(self, *, keep_empty: bool = False) -> tuple[str, ...]:
        """Raw secret values, for scrubbing messages (see :func:`limits.redact`)."""
        values = [self.secret(name) for name in _SECRET_FIELDS]
        if keep_empty:
            return tuple(s.reveal() if s else "" for s in values)
        return tuple(s.reveal() for s in values if s)

    def placeholders(self) -> dict[str, str]:
        """Values for token and login templates ({base_url}, {username}, {password} ...)."""
        secrets = {name: (s.reveal() if (s := self.secret(name)) else "") for name in _SECRET_FIELDS}
        return {
            "base_url": self.base_url,
            "client_id": self.client_id or "",
            "client_secret": secrets["client_secret"],
            "refresh_token": secrets["refresh_token"],
            "username": self.username or "",
            "password": secrets["password"],
            "company": self.company or "",
        }

    def __repr__(self) -> str:
        shown = [f"base_url={self.base_url!r}"]
        for name in ("token_url", "client_id", "username", "company"):
            if getattr(self, name):
                shown.append(f"{name}={'set' if name == 'client_id' else getattr(self, name)!r}")
        for name in _SECRET_FIELDS:
            shown.append(f"{name}={_MASK if self.secret(name) else None!r}")
        return f"ConnectionSettings({', '.join(shown)})"


TokenSender = Callable[[Callable[[], httpx.Request]], httpx.Response]
"""Sends the token request (with the engine's pacing and retries) and returns the response."""


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A credential ready to go on the wire: the headers and query parameters it adds, and the API base.

    ``value`` is the token or session id itself; ``headers`` / ``params`` are what requests carry.
    """

    value: Secret
    api_base_url: str
    refresh_at: float  # time.monotonic() after which we fetch a new one
    headers: Mapping[str, Secret] = field(default_factory=dict)
    params: Mapping[str, Secret] = field(default_factory=dict)
    renewal: Secret | None = None  # a refresh token that came with it (password grant)

    def __repr__(self) -> str:
        return f"AccessToken(api_base_url={self.api_base_url!r}, value={_MASK!r})"


class Authenticator(Protocol):
    """What the engine needs from an auth kind."""

    @property
    def refreshable(self) -> bool: ...

    def token(self, *, send: TokenSender) -> AccessToken: ...

    def invalidate(self, *, token: AccessToken) -> None: ...


def _header_value(scheme: str, token: str) -> Secret:
    return Secret(f"{scheme} {token}" if scheme else token)


class StaticCredential:
    """Credentials that never change during a run (bearer token, API key, HTTP Basic).

    A 401 means the credential itself is wrong: nothing to refresh.

    Args:
        api_base_url: The API base URL.
        headers: Headers every request carries.
        params: Query parameters every request carries (an API key in the URL).
        value: The credential, for the record.
    """

    refreshable = False

    def __init__(
        self,
        *,
        api_base_url: str,
        value: Secret,
        headers: Mapping[str, Secret] | None = None,
        params: Mapping[str, Secret] | None = None,
    ) -> None:
        self._token = AccessToken(
            value=value,
            api_base_url=api_base_url,
            refresh_at=float("inf"),
            headers=dict(headers or {}),
            params=dict(params or {}),
        )

    def token(self, *, send: TokenSender) -> AccessToken:
        return self._token

    def invalidate(self, *, token: AccessToken) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticCredential(api_base_url={self._token.api_base_url!r}, value={_MASK!r})"


def BearerToken(
    *, token: Secret, api_base_url: str, header: str = "Authorization", scheme: str = "Bearer"
) -> StaticCredential:  # noqa: N802 - kept as the name callers know
    """A static bearer token (HubSpot private app)."""
    return StaticCredential(
        api_base_url=api_base_url, value=token, headers={header: _header_value(scheme, token.reveal())}
    )


# Tokens and sessions shared by every authenticator of the same endpoint and credential.
_TOKENS: dict[tuple[str, str], AccessToken] = {}
_TOKEN_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _lock_for(key: tuple[str, str]) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _TOKEN_LOCKS.setdefault(key, threading.Lock())


def clear_token_cache() -> None:
    """Forget every cached token and session (tests; credential rotation)."""
    with _REGISTRY_LOCK:
        _TOKENS.clear()


class _CachedCredential:
    """A credential fetched from the API and shared process-wide until shortly before it expires.

    Subclasses implement :meth:`_fetch`; parallel steps against one account share one token, and a
    401 drops it (unless another caller already replaced it) so the next call fetches a new one.
    """

    refreshable = True

    def __init__(self, *, endpoint: str, fingerprint: str, clock: Callable[[], float]) -> None:
        self._key = (endpoint, fingerprint)
        self._clock = clock

    def token(self, *, send: TokenSender) -> AccessToken:
        """Return a cached token still inside its lifetime, else fetch a new one.

        Args:
            send: Sends the token or login request.

        Returns:
            The token and the API base URL to use with it.
        """
        with _lock_for(self._key):
            cached = _TOKENS.get(self._key)
            if cached is not None and self._clock() < cached.refresh_at:
                return cached
            token = self._fetch(send=send, previous=cached)
            _TOKENS[self._key] = token
            return token

    def invalidate(self, *, token: AccessToken) -> None:
        """Drop ``token`` from the cache after a 401, unless another caller already replaced it."""
        with _lock_for(self._key):
            if _TOKENS.get(self._key) is token:
                # Keep a refresh token that came with it: renewing with it beats sending the password.
                if token.renewal is not None:
                    _TOKENS[self._key] = AccessToken(
                        value=token.value,
                        api_base_url=token.api_base_url,
                        refresh_at=0.0,
                        renewal=token.renewal,
                    )
                else:
                    del _TOKENS[self._key]

    def _fetch(self, *, send: TokenSender, previous: AccessToken | None) -> AccessToken:
        raise NotImplementedError

    def _refresh_at(self, started: float, ttl: float, margin: float) -> float:
        # Renew a margin before expiry, but never earlier than half the lifetime (short test TTLs).
        return started + ttl - min(margin, ttl / 2)


def _answer_json(response: httpx.Response, context: ErrorContext, what: str, fix: str) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise AuthenticationError(
            f"{context.system_title}: the {what} answered with a body that is not JSON.", fix=fix
        ) from None


class OAuth2Token(_CachedCredential):
    """OAuth 2.0 client credentials, refresh token and password grants, with a shared token cache.

    Args:
        spec: The system's auth declaration.
        connection: Base URL, token endpoint and credentials.
        context: Names the system in errors.
        clock: Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        *,
        spec: OAuth2ClientCredentialsAuth | OAuth2RefreshTokenAuth | OAuth2PasswordAuth,
        connection: ConnectionSettings,
        context: ErrorContext,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spec = spec
        self._connection = connection
        self._base_url = connection.base_url.rstrip("/")
        if spec.token_url_variable and connection.token_url:
            # The variable holds the whole endpoint (Entra ID's tenant URL), or the identity host when
            # the declaration also names the path (Zoho: https://accounts.zoho.eu + /oauth/v2/token).
            self._token_url = connection.token_url.rstrip("/") + (spec.token_path or "")
        else:
            self._token_url = self._base_url + (spec.token_path or "")
        self._context = context
        super().__init__(endpoint=self._token_url, fingerprint=connection.fingerprint, clock=clock)

    def __repr__(self) -> str:
        return f"OAuth2Token(kind={self._spec.kind!r}, token_url={self._token_url!r}, credentials={_MASK!r})"

    def _form(self, previous: AccessToken | None) -> dict[str, str]:
        spec, c = self._spec, self._connection
        values = c.placeholders()
        if isinstance(spec, OAuth2ClientCredentialsAuth):
            form = {
                "grant_type": "client_credentials",
                "client_id": values["client_id"],
                "client_secret": values["client_secret"],
            }
            if spec.scope:
                form["scope"] = spec.scope.format(**values)
            return form
        if isinstance(spec, OAuth2RefreshTokenAuth):
            return {
                "grant_type": "refresh_token",
                "client_id": values["client_id"],
                "client_secret": values["client_secret"],
                "refresh_token": values["refresh_token"],
            }
        form = dict(spec.extra_fields)
        if c.client_id:
            form["client_id"] = c.client_id
        if c.client_secret is not None:
            form["client_secret"] = values["client_secret"]
        if previous is not None and previous.renewal is not None:
            form.update(grant_type="refresh_token", refresh_token=previous.renewal.reveal())
        else:
            form.update(grant_type="password", username=values["username"], password=values["password"])
        return form

    def _fetch(self, *, send: TokenSender, previous: AccessToken | None) -> AccessToken:
        try:
            return self._request(send=send, previous=previous)
        except AuthenticationError:
            if previous is None or previous.renewal is None:
                raise
            # The refresh token was refused (expired, revoked): log in with the password again.
            log.info(
                "%s: refresh token refused; requesting a new token with the password",
                self._context.system_title,
            )
            return self._request(send=send, previous=None)

    def _request(self, *, send: TokenSender, previous: AccessToken | None) -> AccessToken:
        form = self._form(previous)
        as_json = self._spec.body_format == "json"

        def build() -> httpx.Request:
            headers = {"Accept": "application/json"}
            if as_json:
                return httpx.Request("POST", self._token_url, json=form, headers=headers)
            return httpx.Request("POST", self._token_url, data=form, headers=headers)

        started = self._clock()
        response = send(build)
        raise_for_status(response=response, context=self._context, token_request=True)
        fix = f"check {self._context.base_url_variable} and the token endpoint of {self._context.yaml_path}."
        body = _answer_json(response, self._context, "token endpoint", fix)
        try:
            access_token = str(body["access_token"])
        except (KeyError, TypeError):
            # Some identity servers refuse with HTTP 200 and {"error": "invalid_client"} (Zoho).
            refusal = body.get("error") if isinstance(body, dict) else None
            said = f": {refusal}" if refusal else " without an access_token"
            raise AuthenticationError(
                redact(
                    f"{self._context.system_title}: the token endpoint answered{said}.", self._context.secrets
                ),
                fix=suggest_fix(
                    status=401, code=str(refusal or ""), context=self._context, token_request=True
                ),
                code=str(refusal) if refusal else None,
            ) from None
        api_base = self._base_url
        if self._spec.api_base_path:
            found = resolve_path(body, self._spec.api_base_path)
            if isinstance(found, str) and found:
                api_base = found.rstrip("/")
        try:
            ttl = float(body["expires_in"])
        except (KeyError, TypeError, ValueError):
            ttl = float(self._spec.default_ttl_seconds)
        renewal = body.get("refresh_token") if isinstance(self._spec, OAuth2PasswordAuth) else None
        return AccessToken(
            value=Secret(access_token),
            api_base_url=api_base,
            refresh_at=self._refresh_at(started, ttl, float(self._spec.refresh_margin_seconds)),
            headers={self._spec.header: _header_value(self._spec.scheme, access_token)},
            renewal=Secret(str(renewal)) if renewal else None,
        )


def OAuth2ClientCredentials(  # noqa: N802 - kept as the name callers know
    *,
    spec: OAuth2ClientCredentialsAuth,
    base_url: str,
    client_id: str,
    client_secret: Secret,
    context: ErrorContext,
    clock: Callable[[], float] = time.monotonic,
) -> OAuth2Token:
    """The client credentials grant of :class:`OAuth2Token` from its parts."""
    connection = ConnectionSettings(base_url=base_url, client_id=client_id, client_secret=client_secret)
    return OAuth2Token(spec=spec, connection=connection, context=context, clock=clock)


class SessionLogin(_CachedCredential):
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
        return f"SessionLogin(login_url={self._login_url!r}, credentials={_MASK!r})"

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
        answer = _answer_json(response, self._context, "login", fix) if response.content else {}
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


def _require(system: SystemSpec, connection: ConnectionSettings) -> None:
    missing = []
    for credential in system.credential_variables():
        value = getattr(connection, credential.field)
        if credential.required and not value:
            missing.append(credential.variable)
    if missing:
        raise AuthenticationError(
            f"{system.title}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set.",
            fix=f"set {', '.join(missing)}.",
        )


def build_authenticator(
    *, system: SystemSpec, connection: ConnectionSettings, context: ErrorContext
) -> Authenticator:
    """Make the authenticator the system declares, checking the needed credentials are present.

    Args:
        system: The system declaration.
        connection: Base URL and credentials.
        context: Names the system in errors.

    Returns:
        An authenticator.

    Raises:
        AuthenticationError: A credential the auth kind needs is missing (the message names the
            environment variables to set).
    """
    _require(system, connection)
    auth = system.auth
    base = connection.base_url
    if isinstance(auth, OAuth2ClientCredentialsAuth | OAuth2RefreshTokenAuth | OAuth2PasswordAuth):
        return OAuth2Token(spec=auth, connection=connection, context=context)
    if isinstance(auth, SessionAuth):
        return SessionLogin(spec=auth, connection=connection, context=context)
    if isinstance(auth, BearerTokenAuth):
        token = connection.access_token
        assert token is not None  # _require
        return BearerToken(token=token, api_base_url=base, header=auth.header, scheme=auth.scheme)
    if isinstance(auth, ApiKeyAuth):
        token = connection.access_token
        assert token is not None
        if auth.header:
            return StaticCredential(api_base_url=base, value=token, headers={auth.header: token})
        assert auth.query_param is not None
        return StaticCredential(api_base_url=base, value=token, params={auth.query_param: token})
    if isinstance(auth, BasicAuth):
        password = connection.password
        assert password is not None and connection.username is not None
        encoded = base64.b64encode(f"{connection.username}:{password.reveal()}".encode()).decode("ascii")
        return StaticCredential(
            api_base_url=base, value=Secret(encoded), headers={"Authorization": Secret(f"Basic {encoded}")}
        )
    raise TypeError(f"unsupported auth kind {auth!r}")  # pragma: no cover - the spec union is closed
