"""A static bearer token in a header (a HubSpot private-app access token)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_pipelines.connectors.auth.base import (
    AUTH_KINDS,
    Authenticator,
    AuthModel,
    ConnectionSettings,
    CredentialVariable,
    Secret,
    StaticCredential,
    header_value,
)
from crm_pipelines.connectors.limits import ErrorContext

__all__ = ["BearerToken", "BearerTokenAuth"]


@AUTH_KINDS.register("bearer")
class BearerTokenAuth(AuthModel):
    """A static token, e.g. a HubSpot private-app access token."""

    kind: Literal["bearer"] = "bearer"
    token_variable: str = Field(description="Environment variable holding the token.")
    header: str = "Authorization"
    scheme: str = "Bearer"

    def credential_variables(self) -> list[CredentialVariable]:
        return [CredentialVariable("access_token", self.token_variable, secret=True)]

    def authenticator(self, *, connection: ConnectionSettings, context: ErrorContext) -> Authenticator:
        token = connection.access_token
        assert token is not None  # build_authenticator checked it is set
        return BearerToken(
            token=token, api_base_url=connection.base_url, header=self.header, scheme=self.scheme
        )


def BearerToken(
    *, token: Secret, api_base_url: str, header: str = "Authorization", scheme: str = "Bearer"
) -> StaticCredential:
    """A static bearer token (HubSpot private app)."""
    return StaticCredential(
        api_base_url=api_base_url, value=token, headers={header: header_value(scheme, token.reveal())}
    )
