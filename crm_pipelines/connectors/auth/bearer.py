"""A static bearer token in a header (a HubSpot private-app access token)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_pipelines.connectors.auth.base import Secret, StaticCredential, header_value
from crm_pipelines.connectors.spec_base import SpecModel

__all__ = ["BearerToken", "BearerTokenAuth"]


class BearerTokenAuth(SpecModel):
    """A static token, e.g. a HubSpot private-app access token."""

    kind: Literal["bearer"]
    token_variable: str = Field(description="Environment variable holding the token.")
    header: str = "Authorization"
    scheme: str = "Bearer"


def BearerToken(
    *, token: Secret, api_base_url: str, header: str = "Authorization", scheme: str = "Bearer"
) -> StaticCredential:  # noqa: N802 - kept as the name callers know
    """A static bearer token (HubSpot private app)."""
    return StaticCredential(
        api_base_url=api_base_url, value=token, headers={header: header_value(scheme, token.reveal())}
    )
