"""A static API key in a header (Pipedrive ``x-api-token``) or a query parameter."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from crm_pipelines.connectors.auth.base import (
    AUTH_KINDS,
    Authenticator,
    AuthModel,
    ConnectionSettings,
    CredentialVariable,
    StaticCredential,
)
from crm_pipelines.connectors.limits import ErrorContext

__all__ = ["ApiKeyAuth"]


@AUTH_KINDS.register("api_key")
class ApiKeyAuth(AuthModel):
    """A static API key in a header (Pipedrive ``x-api-token``) or a query parameter."""

    kind: Literal["api_key"] = "api_key"
    token_variable: str
    header: str | None = None
    query_param: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if (self.header is None) == (self.query_param is None):
            raise ValueError("api_key needs exactly one of header or query_param")
        return self

    def credential_variables(self) -> list[CredentialVariable]:
        return [CredentialVariable("access_token", self.token_variable, secret=True)]

    def authenticator(self, *, connection: ConnectionSettings, context: ErrorContext) -> Authenticator:
        token = connection.access_token
        assert token is not None  # build_authenticator checked it is set
        if self.header:
            return StaticCredential(
                api_base_url=connection.base_url, value=token, headers={self.header: token}
            )
        assert self.query_param is not None
        return StaticCredential(
            api_base_url=connection.base_url, value=token, params={self.query_param: token}
        )
