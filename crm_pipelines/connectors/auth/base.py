"""What every auth kind is and shares: its declaration model, secrets, tokens and their cache.

An auth kind is an :class:`AuthModel` (what ``auth:`` declares) registered in :data:`AUTH_KINDS`
under its ``kind``: it names the environment variables it reads and makes its
:class:`Authenticator`. :func:`build_authenticator` checks those variables are set and asks it.

Secrets are held in :class:`Secret`, whose ``repr``/``str`` never show the value; the only way to
the value is :meth:`Secret.reveal`, called when a request header or token form is built. An
:class:`Authenticator` hands the engine an :class:`AccessToken` (the headers and parameters a
request carries); a :class:`StaticCredential` never changes, a :class:`CachedCredential` is fetched
from the API and shared by every caller of the same endpoint and credential.
"""

from __future__ import annotations

import hmac
import json
import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from crm_pipelines.connectors.limits import AuthenticationError, ErrorContext, credential_fingerprint
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.registry import DeclarationRegistry

if TYPE_CHECKING:
    from crm_pipelines.connectors.spec import SystemSpec

__all__ = [
    "AUTH_KINDS",
    "CREDENTIAL_PLACEHOLDERS",
    "MASK",
    "AccessToken",
    "AuthModel",
    "Authenticator",
    "CachedCredential",
    "ConnectionSettings",
    "CredentialVariable",
    "Secret",
    "StaticCredential",
    "TokenSender",
    "answer_json",
    "build_authenticator",
    "clear_token_cache",
    "header_value",
]

MASK = "***"

# Placeholders of token/login request templates (scope, login body): credentials and the base URL.
CREDENTIAL_PLACEHOLDERS: frozenset[str] = frozenset(
    {"base_url", "client_id", "client_secret", "username", "password", "company", "refresh_token"}
)


@dataclass(frozen=True)
class CredentialVariable:
    """One environment variable an auth kind reads: the resource field it fills and whether it must be set."""

    field: str  # a ConnectionSettings / CrmApiResource field
    variable: str
    required: bool = True
    secret: bool = False


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
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

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
            shown.append(f"{name}={MASK if self.secret(name) else None!r}")
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
        return f"AccessToken(api_base_url={self.api_base_url!r}, value={MASK!r})"


class Authenticator(Protocol):
    """What the engine needs from an auth kind."""

    @property
    def refreshable(self) -> bool: ...

    def token(self, *, send: TokenSender) -> AccessToken: ...

    def invalidate(self, *, token: AccessToken) -> None: ...


def header_value(scheme: str, token: str) -> Secret:
    """The header value of a token: ``<scheme> <token>``, or the bare token when the scheme is empty."""
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
        return f"StaticCredential(api_base_url={self._token.api_base_url!r}, value={MASK!r})"


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


class CachedCredential:
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


def answer_json(response: httpx.Response, context: ErrorContext, what: str, fix: str) -> Any:
    """The JSON of a token or login answer; an answer that is not JSON is a refused credential."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise AuthenticationError(
            f"{context.system_title}: the {what} answered with a body that is not JSON.", fix=fix
        ) from None


class AuthModel(SpecModel):
    """What an ``auth:`` declaration is: its ``kind``, the variables it reads and the credential it makes."""

    kind: str

    @abstractmethod
    def credential_variables(self) -> list[CredentialVariable]:
        """The environment variables it reads, in the order a user sets them (not the base URL)."""

    @abstractmethod
    def authenticator(self, *, connection: ConnectionSettings, context: ErrorContext) -> Authenticator:
        """The authenticator for ``connection`` (its required credentials are known to be set)."""


# Every auth kind, by the ``kind`` a declaration names it with.
AUTH_KINDS: DeclarationRegistry[AuthModel] = DeclarationRegistry("auth kind", discriminator="kind")


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
    return system.auth.authenticator(connection=connection, context=context)
