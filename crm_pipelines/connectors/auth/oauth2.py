"""OAuth 2.0 token endpoints: the client credentials, refresh token and password grants.

:class:`OAuth2Token` asks the declared token endpoint (on the API host, or on an identity provider's
named by ``token_url_variable``) for an access token, keeps it in the shared cache until shortly
before it expires, and renews it with a refresh token the answer brought (password grant) before
sending the password again.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar, Literal

import httpx
from pydantic import Field, field_validator, model_validator

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
    header_value,
)
from crm_pipelines.connectors.limits import (
    AuthenticationError,
    ErrorContext,
    raise_for_status,
    redact,
    suggest_fix,
)
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.spec_base import check_template

__all__ = [
    "OAuth2ClientCredentials",
    "OAuth2ClientCredentialsAuth",
    "OAuth2PasswordAuth",
    "OAuth2RefreshTokenAuth",
    "OAuth2Token",
    "OAuthEndpoint",
]

log = logging.getLogger(__name__)


class _TokenAuth(AuthModel):
    """What every kind that ends in a token has: where the token goes and how long it lives."""

    header: str = Field(default="Authorization", description="Request header carrying the token.")
    scheme: str = Field(
        default="Bearer",
        description="Word before the token in the header (Zoho 'Zoho-oauthtoken'; '' sends the bare token).",
    )
    default_ttl_seconds: int = Field(
        default=900,
        gt=0,
        description="Token lifetime assumed when the answer has no `expires_in` (Salesforce sends none).",
    )
    refresh_margin_seconds: int = Field(default=60, ge=0, description="Renew this long before expiry.")


class OAuthEndpoint(_TokenAuth):
    """What the token-endpoint grants share: where the endpoint is and what its answer holds."""

    token_path: str | None = Field(default=None, description="Token endpoint, relative to the base URL.")
    token_url_variable: str | None = Field(
        default=None,
        description=(
            "Environment variable with the token endpoint of an identity provider on another host "
            "(Microsoft identity platform), or with that host when token_path is also given (Zoho's "
            "accounts server + /oauth/v2/token)."
        ),
    )
    api_base_path: str | None = Field(
        default=None,
        description="Dotted path of the API base in the token answer (Salesforce instance_url, Zoho api_domain).",
    )
    body_format: Literal["form", "json"] = "form"

    # Whether a refresh_token in the token answer is kept to renew the access token with.
    keeps_refresh_token: ClassVar[bool] = False

    @model_validator(mode="after")
    def _endpoint(self) -> OAuthEndpoint:
        if self.token_path is None and self.token_url_variable is None:
            raise ValueError("needs token_path or token_url_variable")
        if self.token_path is not None and not self.token_path.startswith("/"):
            raise ValueError(f"token_path must start with '/', got {self.token_path!r}")
        return self

    @abstractmethod
    def token_form(self, *, connection: ConnectionSettings, previous: AccessToken | None) -> dict[str, str]:
        """The fields of the token request: the grant and its credentials.

        Args:
            connection: The credentials.
            previous: The token being renewed (its refresh token, if one came with it), or None.
        """

    def endpoint_variables(self) -> list[CredentialVariable]:
        # Declared means needed: the identity host differs from the API (Entra ID, Zoho accounts server).
        return [CredentialVariable("token_url", self.token_url_variable)] if self.token_url_variable else []

    def authenticator(self, *, connection: ConnectionSettings, context: ErrorContext) -> Authenticator:
        return OAuth2Token(spec=self, connection=connection, context=context)


@AUTH_KINDS.register("oauth2_client_credentials")
class OAuth2ClientCredentialsAuth(OAuthEndpoint):
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4): a Salesforce connected app, an Entra ID app."""

    kind: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    scope: str | None = Field(default=None, description="Scope template, e.g. '{base_url}/.default'.")
    client_id_variable: str = Field(description="Environment variable holding the client id.")
    client_secret_variable: str = Field(description="Environment variable holding the secret.")

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, CREDENTIAL_PLACEHOLDERS)

    def credential_variables(self) -> list[CredentialVariable]:
        return [
            *self.endpoint_variables(),
            CredentialVariable("client_id", self.client_id_variable),
            CredentialVariable("client_secret", self.client_secret_variable, secret=True),
        ]

    def token_form(self, *, connection: ConnectionSettings, previous: AccessToken | None) -> dict[str, str]:
        values = connection.placeholders()
        form = {
            "grant_type": "client_credentials",
            "client_id": values["client_id"],
            "client_secret": values["client_secret"],
        }
        if self.scope:
            form["scope"] = self.scope.format(**values)
        return form


@AUTH_KINDS.register("oauth2_refresh_token")
class OAuth2RefreshTokenAuth(OAuthEndpoint):
    """OAuth 2.0 refresh token grant (RFC 6749 §6): a long-lived refresh token buys access tokens (Zoho)."""

    kind: Literal["oauth2_refresh_token"] = "oauth2_refresh_token"
    client_id_variable: str
    client_secret_variable: str
    refresh_token_variable: str

    def credential_variables(self) -> list[CredentialVariable]:
        return [
            *self.endpoint_variables(),
            CredentialVariable("client_id", self.client_id_variable),
            CredentialVariable("client_secret", self.client_secret_variable, secret=True),
            CredentialVariable("refresh_token", self.refresh_token_variable, secret=True),
        ]

    def token_form(self, *, connection: ConnectionSettings, previous: AccessToken | None) -> dict[str, str]:
        values = connection.placeholders()
        return {
            "grant_type": "refresh_token",
            "client_id": values["client_id"],
            "client_secret": values["client_secret"],
            "refresh_token": values["refresh_token"],
        }


@AUTH_KINDS.register("oauth2_password")
class OAuth2PasswordAuth(OAuthEndpoint):
    """OAuth 2.0 resource owner password grant (RFC 6749 §4.3), e.g. SugarCRM's ``client_id=sugar``.

    A ``refresh_token`` in the answer renews the access token; the password is sent again only when
    that fails.
    """

    kind: Literal["oauth2_password"] = "oauth2_password"
    username_variable: str
    password_variable: str
    client_id_variable: str | None = None
    client_secret_variable: str | None = None
    extra_fields: dict[str, str] = Field(
        default_factory=dict,
        description="Fields sent with every token request, e.g. {client_id: sugar, platform: crm_pipelines}.",
    )

    keeps_refresh_token: ClassVar[bool] = True

    def credential_variables(self) -> list[CredentialVariable]:
        out = [
            *self.endpoint_variables(),
            CredentialVariable("username", self.username_variable),
            CredentialVariable("password", self.password_variable, secret=True),
        ]
        # Optional: SugarCRM's default public client is client_id "sugar" with an empty secret.
        if self.client_id_variable:
            out.append(CredentialVariable("client_id", self.client_id_variable, required=False))
        if self.client_secret_variable:
            out.append(
                CredentialVariable("client_secret", self.client_secret_variable, required=False, secret=True)
            )
        return out

    def token_form(self, *, connection: ConnectionSettings, previous: AccessToken | None) -> dict[str, str]:
        values = connection.placeholders()
        form = dict(self.extra_fields)
        if connection.client_id:
            form["client_id"] = connection.client_id
        if connection.client_secret is not None:
            form["client_secret"] = values["client_secret"]
        if previous is not None and previous.renewal is not None:
            form.update(grant_type="refresh_token", refresh_token=previous.renewal.reveal())
        else:
            form.update(grant_type="password", username=values["username"], password=values["password"])
        return form


class OAuth2Token(CachedCredential):
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
        spec: OAuthEndpoint,
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
        return f"OAuth2Token(kind={self._spec.kind!r}, token_url={self._token_url!r}, credentials={MASK!r})"

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
        form = self._spec.token_form(connection=self._connection, previous=previous)
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
        body = answer_json(response, self._context, "token endpoint", fix)
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
        renewal = body.get("refresh_token") if self._spec.keeps_refresh_token else None
        return AccessToken(
            value=Secret(access_token),
            api_base_url=api_base,
            refresh_at=self._refresh_at(started, ttl, float(self._spec.refresh_margin_seconds)),
            headers={self._spec.header: header_value(self._spec.scheme, access_token)},
            renewal=Secret(str(renewal)) if renewal else None,
        )


def OAuth2ClientCredentials(
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
