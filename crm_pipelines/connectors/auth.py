"""Credentials and authenticators: OAuth 2.0 client credentials and static bearer tokens.

Secrets are held in :class:`Secret`, whose ``repr``/``str`` never show the value; the only way to
the value is :meth:`Secret.reveal`, called when a request header or token form is built.

OAuth tokens are cached per token endpoint and credential (process-wide, so parallel steps against
the same account share one token), refreshed shortly before they expire, and refreshed once when
the API answers 401 (a session revoked or timed out early).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from crm_pipelines.connectors.limits import (
    AuthenticationError,
    ErrorContext,
    credential_fingerprint,
    raise_for_status,
)
from crm_pipelines.connectors.spec import BearerTokenAuth, OAuth2ClientCredentialsAuth, SystemSpec

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


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    """Where and as whom to connect; plain strings given for secrets are wrapped in :class:`Secret`.

    Args:
        base_url: API base URL (Salesforce: the login/My Domain URL; HubSpot: https://api.hubapi.com).
        client_id: OAuth client id (Salesforce consumer key).
        client_secret: OAuth client secret.
        access_token: Static bearer token (HubSpot private-app token).
        timeout_seconds: Per-request timeout; ``None`` uses the system's declared timeout.
        verify: TLS verification: ``True`` (default, system CAs via certifi) or a CA bundle path
            (e.g. a corporate proxy's); never turned off by the engine itself.
    """

    base_url: str
    client_id: str | None = None
    client_secret: Secret | None = None
    access_token: Secret | None = None
    timeout_seconds: float | None = None
    verify: bool | str = True
    _fingerprint: str = field(init=False, default="", compare=False)

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str | None = None,
        client_secret: str | Secret | None = None,
        access_token: str | Secret | None = None,
        timeout_seconds: float | None = None,
        verify: bool | str = True,
    ) -> None:
        object.__setattr__(self, "base_url", base_url.strip().rstrip("/"))
        object.__setattr__(self, "client_id", client_id)
        object.__setattr__(self, "client_secret", _as_secret(client_secret))
        object.__setattr__(self, "access_token", _as_secret(access_token))
        object.__setattr__(self, "timeout_seconds", timeout_seconds)
        object.__setattr__(self, "verify", verify)
        parts = [
            client_id,
            self.client_secret.reveal() if self.client_secret else None,
            self.access_token.reveal() if self.access_token else None,
        ]
        object.__setattr__(self, "_fingerprint", credential_fingerprint(parts=parts))

    @property
    def fingerprint(self) -> str:
        """One-way digest of the credential: identifies the account for shared rate limits."""
        return self._fingerprint

    def secret_values(self) -> tuple[str, ...]:
        """Raw secret values, for scrubbing messages (see :func:`limits.redact`)."""
        return tuple(s.reveal() for s in (self.client_secret, self.access_token) if s)

    def __repr__(self) -> str:
        return (
            f"ConnectionSettings(base_url={self.base_url!r}, "
            f"client_id={'set' if self.client_id else None!r}, "
            f"client_secret={_MASK if self.client_secret else None!r}, "
            f"access_token={_MASK if self.access_token else None!r})"
        )


TokenSender = Callable[[Callable[[], httpx.Request]], httpx.Response]
"""Sends the token request (with the engine's pacing and retries) and returns the response."""


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A bearer token and the API base it is valid for."""

    value: Secret
    api_base_url: str
    refresh_at: float  # time.monotonic() after which we fetch a new one

    def __repr__(self) -> str:
        return f"AccessToken(api_base_url={self.api_base_url!r}, value={_MASK!r})"


class Authenticator(Protocol):
    """What the engine needs from an auth kind."""

    @property
    def refreshable(self) -> bool: ...

    def token(self, *, send: TokenSender) -> AccessToken: ...

    def invalidate(self, *, token: AccessToken) -> None: ...


class BearerToken:
    """A static token (HubSpot private app); a 401 means the token itself is wrong.

    Args:
        token: The access token.
        api_base_url: The API base URL.
    """

    refreshable = False

    def __init__(self, *, token: Secret, api_base_url: str) -> None:
        self._token = AccessToken(value=token, api_base_url=api_base_url, refresh_at=float("inf"))

    def token(self, *, send: TokenSender) -> AccessToken:
        return self._token

    def invalidate(self, *, token: AccessToken) -> None:
        return None

    def __repr__(self) -> str:
        return f"BearerToken(api_base_url={self._token.api_base_url!r}, token={_MASK!r})"


# Token cache shared by every OAuth2ClientCredentials of the same token URL and credential.
_TOKENS: dict[tuple[str, str], AccessToken] = {}
_TOKEN_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _lock_for(key: tuple[str, str]) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _TOKEN_LOCKS.setdefault(key, threading.Lock())


def clear_token_cache() -> None:
    """Forget every cached OAuth token (tests; credential rotation)."""
    with _REGISTRY_LOCK:
        _TOKENS.clear()


class OAuth2ClientCredentials:
    """OAuth 2.0 client credentials grant with a shared, self-refreshing token cache.

    Args:
        spec: The system's auth declaration.
        base_url: The login base URL; the token endpoint is ``base_url + spec.token_path``.
        client_id: Client id.
        client_secret: Client secret.
        context: Names the system in errors.
        clock: Monotonic clock, injectable for tests.
    """

    refreshable = True

    def __init__(
        self,
        *,
        spec: OAuth2ClientCredentialsAuth,
        base_url: str,
        client_id: str,
        client_secret: Secret,
        context: ErrorContext,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spec = spec
        self._base_url = base_url.rstrip("/")
        self._token_url = self._base_url + spec.token_path
        self._client_id = client_id
        self._client_secret = client_secret
        self._context = context
        self._clock = clock
        self._key = (self._token_url, credential_fingerprint(parts=[client_id, client_secret.reveal()]))

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(token_url={self._token_url!r}, client_secret={_MASK!r})"

    def token(self, *, send: TokenSender) -> AccessToken:
        """Return a cached token still inside its lifetime, else fetch a new one.

        Args:
            send: Sends the token request.

        Returns:
            The token and the API base URL to use with it.
        """
        with _lock_for(self._key):
            cached = _TOKENS.get(self._key)
            if cached is not None and self._clock() < cached.refresh_at:
                return cached
            token = self._fetch(send=send)
            _TOKENS[self._key] = token
            return token

    def invalidate(self, *, token: AccessToken) -> None:
        """Drop ``token`` from the cache after a 401, unless another caller already replaced it."""
        with _lock_for(self._key):
            if _TOKENS.get(self._key) is token:
                del _TOKENS[self._key]

    def _fetch(self, *, send: TokenSender) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.reveal(),
        }

        def build() -> httpx.Request:
            return httpx.Request("POST", self._token_url, data=form, headers={"Accept": "application/json"})

        started = self._clock()
        response = send(build)
        raise_for_status(response=response, context=self._context, token_request=True)
        try:
            body = json.loads(response.content)
            access_token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise AuthenticationError(
                f"{self._context.system_title}: the token endpoint answered without an access_token.",
                fix=f"check {self._context.base_url_variable}: it must be the login or My Domain URL.",
            ) from None
        api_base = self._base_url
        if self._spec.use_instance_url and body.get("instance_url"):
            api_base = str(body["instance_url"]).rstrip("/")
        try:
            ttl = float(body["expires_in"])
        except (KeyError, TypeError, ValueError):
            ttl = float(self._spec.default_ttl_seconds)
        # Refresh a margin before expiry, but never earlier than half the lifetime (short test TTLs).
        lead = min(float(self._spec.refresh_margin_seconds), ttl / 2)
        return AccessToken(value=Secret(access_token), api_base_url=api_base, refresh_at=started + ttl - lead)


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
        AuthenticationError: A credential the auth kind needs is missing.
    """
    auth = system.auth
    if isinstance(auth, OAuth2ClientCredentialsAuth):
        if not connection.client_id or not connection.client_secret:
            raise AuthenticationError(
                f"{system.title}: client id or client secret is not set.",
                fix=f"set {auth.client_id_variable} and {auth.client_secret_variable}.",
            )
        return OAuth2ClientCredentials(
            spec=auth,
            base_url=connection.base_url,
            client_id=connection.client_id,
            client_secret=connection.client_secret,
            context=context,
        )
    if isinstance(auth, BearerTokenAuth):
        if not connection.access_token:
            raise AuthenticationError(
                f"{system.title}: access token is not set.", fix=f"set {auth.token_variable}."
            )
        return BearerToken(token=connection.access_token, api_base_url=connection.base_url)
    raise TypeError(f"unsupported auth kind {auth!r}")  # pragma: no cover - the spec union is closed
