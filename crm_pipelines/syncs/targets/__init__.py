"""Sync targets: the CRMs (through the connector engine) and the ERP's orders, registered by kind."""

from crm_pipelines.syncs.targets import crm, erp_orders  # noqa: F401 - each registers its kind
from crm_pipelines.syncs.targets.base import (
    TARGET_KINDS,
    Operation,
    Outcome,
    TargetKind,
    TargetObject,
    target_for,
)

__all__ = ["TARGET_KINDS", "Operation", "Outcome", "TargetKind", "TargetObject", "target_for"]
