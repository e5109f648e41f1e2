"""A static API key in a header (Pipedrive ``x-api-token``) or a query parameter."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from crm_pipelines.connectors.spec_base import SpecModel

__all__ = ["ApiKeyAuth"]


class ApiKeyAuth(SpecModel):
    """A static API key in a header (Pipedrive ``x-api-token``) or a query parameter."""

    kind: Literal["api_key"]
    token_variable: str
    header: str | None = None
    query_param: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if (self.header is None) == (self.query_param is None):
            raise ValueError("api_key needs exactly one of header or query_param")
        return self
