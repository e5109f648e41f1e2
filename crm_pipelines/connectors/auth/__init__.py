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
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from crm_pipelines.connectors.auth.api_key import ApiKeyAuth
from crm_pipelines.connectors.auth.base import (
    AccessToken,
    Authenticator,
    ConnectionSettings,
    CredentialVariable,
    Secret,
    StaticCredential,
    TokenSender,
    clear_token_cache,
)
from crm_pipelines.connectors.auth.basic import BasicAuth
from crm_pipelines.connectors.auth.bearer import BearerToken, BearerTokenAuth
from crm_pipelines.connectors.auth.oauth2 import (
    OAuth2ClientCredentials,
    OAuth2ClientCredentialsAuth,
    OAuth2PasswordAuth,
    OAuth2RefreshTokenAuth,
    OAuth2Token,
    OAuthEndpoint,
)
from crm_pipelines.connectors.auth.session_login import CsrfSpec, SessionAuth, SessionLogin
from crm_pipelines.connectors.limits import AuthenticationError, ErrorContext

if TYPE_CHECKING:
    from crm_pipelines.connectors.spec import SystemSpec

__all__ = [
    "AccessToken",
    "ApiKeyAuth",
    "AuthSpec",
    "Authenticator",
    "BasicAuth",
    "BearerToken",
    "BearerTokenAuth",
    "ConnectionSettings",
    "CredentialVariable",
    "CsrfSpec",
    "OAuth2ClientCredentials",
    "OAuth2ClientCredentialsAuth",
    "OAuth2PasswordAuth",
    "OAuth2RefreshTokenAuth",
    "OAuth2Token",
    "Secret",
    "SessionAuth",
    "SessionLogin",
    "StaticCredential",
    "TokenSender",
    "build_authenticator",
    "clear_token_cache",
    "credential_variables",
]

AuthSpec = Annotated[
    OAuth2ClientCredentialsAuth
    | OAuth2RefreshTokenAuth
    | OAuth2PasswordAuth
    | BearerTokenAuth
    | ApiKeyAuth
    | BasicAuth
    | SessionAuth,
    Field(discriminator="kind"),
]


def credential_variables(auth: AuthSpec) -> list[CredentialVariable]:
    """The environment variables an auth declaration reads, in the order a user sets them.

    Args:
        auth: A system's auth declaration.

    Returns:
        One entry per variable (the base URL is the system's ``base_url_variable``, not listed here).
    """
    out: list[CredentialVariable] = []
    if isinstance(auth, OAuthEndpoint) and auth.token_url_variable:
        # Declared means needed: the identity host differs from the API (Entra ID, Zoho accounts server).
        out.append(CredentialVariable("token_url", auth.token_url_variable))
    if isinstance(auth, OAuth2ClientCredentialsAuth | OAuth2RefreshTokenAuth):
        out.append(CredentialVariable("client_id", auth.client_id_variable))
        out.append(CredentialVariable("client_secret", auth.client_secret_variable, secret=True))
    if isinstance(auth, OAuth2RefreshTokenAuth):
        out.append(CredentialVariable("refresh_token", auth.refresh_token_variable, secret=True))
    if isinstance(auth, OAuth2PasswordAuth | BasicAuth | SessionAuth):
        if isinstance(auth, SessionAuth) and auth.company_variable:
            out.append(CredentialVariable("company", auth.company_variable))
        out.append(CredentialVariable("username", auth.username_variable))
        out.append(CredentialVariable("password", auth.password_variable, secret=True))
    if isinstance(auth, OAuth2PasswordAuth):
        # Optional: SugarCRM's default public client is client_id "sugar" with an empty secret.
        if auth.client_id_variable:
            out.append(CredentialVariable("client_id", auth.client_id_variable, required=False))
        if auth.client_secret_variable:
            out.append(
                CredentialVariable("client_secret", auth.client_secret_variable, required=False, secret=True)
            )
    if isinstance(auth, BearerTokenAuth | ApiKeyAuth):
        out.append(CredentialVariable("access_token", auth.token_variable, secret=True))
    return out


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
