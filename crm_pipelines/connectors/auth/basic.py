"""HTTP Basic authentication on every request (SData servers: Infor CRM, Sage CRM)."""

from __future__ import annotations

from typing import Literal

from crm_pipelines.connectors.spec_base import SpecModel

__all__ = ["BasicAuth"]


class BasicAuth(SpecModel):
    """HTTP Basic authentication on every request (SData servers: Infor CRM, Sage CRM)."""

    kind: Literal["basic"]
    username_variable: str
    password_variable: str
