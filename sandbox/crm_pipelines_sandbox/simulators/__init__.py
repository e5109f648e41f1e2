"""HTTP simulators of the CRM APIs the sandbox serves, each backed by a SQLite store."""

from crm_pipelines_sandbox.simulators.base import (
    DROP_CONNECTION,
    SLOW_RESPONSE,
    Faults,
    RateLimit,
    SimulatorServer,
)
from crm_pipelines_sandbox.simulators.hubspot import HubSpotSimulator
from crm_pipelines_sandbox.simulators.salesforce import SalesforceSimulator

__all__ = [
    "DROP_CONNECTION",
    "SLOW_RESPONSE",
    "Faults",
    "HubSpotSimulator",
    "RateLimit",
    "SalesforceSimulator",
    "SimulatorServer",
]
