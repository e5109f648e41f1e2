"""Credentials and authenticators: every auth kind a system can declare.

* OAuth 2.0 client credentials, refresh token and password grants (:class:`OAuth2Token`);
* cookie sessions opened by a login request (:class:`SessionLogin`: SAP Business One, Creatio);
* static credentials: bearer tokens, API keys in a header or the query, HTTP Basic (:class:`StaticCredential`).

Secrets are held in :class:`Secret`, whose ``repr``/``str`` never show the value; the only way to
the value is :meth:`Secret.reveal`, called when a request header or token form is built.

Tokens and sessions are cached per endpoint and credential (process-wide, so parallel steps against
the same account share one), renewed shortly before they expire, and renewed once when the API
answers 401 (a session revoked or timed out early).

Each kind is one module here: its declaration model, registered in :data:`AUTH_KINDS` under its
``kind``, and the credential it makes. A new kind is a new module imported below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crm_pipelines.connectors.auth.api_key import ApiKeyAuth
from crm_pipelines.connectors.auth.base import (
    AUTH_KINDS,
    AccessToken,
    Authenticator,
    AuthModel,
    ConnectionSettings,
    CredentialVariable,
    Secret,
    StaticCredential,
    TokenSender,
    build_authenticator,
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
)
from crm_pipelines.connectors.auth.session_login import CsrfSpec, SessionAuth, SessionLogin

__all__ = [
    "AUTH_KINDS",
    "AccessToken",
    "ApiKeyAuth",
    "AuthModel",
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

# The union a system's `auth:` validates against, built from every registered kind (the modules
# imported above); mypy sees the base model.
if TYPE_CHECKING:
    AuthSpec = AuthModel
else:
    AuthSpec = AUTH_KINDS.union()


def credential_variables(auth: AuthModel) -> list[CredentialVariable]:
    """The environment variables an auth declaration reads, in the order a user sets them.

    Args:
        auth: A system's auth declaration.

    Returns:
        One entry per variable (the base URL is the system's ``base_url_variable``, not listed here).
    """
    return auth.credential_variables()
