"""HTTP Basic authentication on every request (SData servers: Infor CRM, Sage CRM; Zendesk API tokens)."""

from __future__ import annotations

import base64
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
)
from crm_pipelines.connectors.limits import ErrorContext

__all__ = ["BasicAuth"]


@AUTH_KINDS.register("basic")
class BasicAuth(AuthModel):
    """HTTP Basic authentication on every request (SData servers: Infor CRM, Sage CRM)."""

    kind: Literal["basic"] = "basic"
    username_variable: str
    password_variable: str
    username_suffix: str = Field(
        default="",
        description="Appended to the username (a Zendesk API token authenticates as '<email>/token').",
    )

    def credential_variables(self) -> list[CredentialVariable]:
        return [
            CredentialVariable("username", self.username_variable),
            CredentialVariable("password", self.password_variable, secret=True),
        ]

    def authenticator(self, *, connection: ConnectionSettings, context: ErrorContext) -> Authenticator:
        password = connection.password
        assert password is not None
        assert connection.username is not None
        encoded = base64.b64encode(
            f"{connection.username}{self.username_suffix}:{password.reveal()}".encode()
        ).decode("ascii")
        return StaticCredential(
            api_base_url=connection.base_url,
            value=Secret(encoded),
            headers={"Authorization": Secret(f"Basic {encoded}")},
        )
