"""The ways to read an object besides walking its declared pages, chosen by what the object declares.

* :mod:`.delta`: change tracking through delta links (``incremental.delta``).
* :mod:`.bulk`: Salesforce Bulk API 2.0 query jobs for big windows (``bulk``).
* :mod:`.search`: HubSpot CRM search split into time windows under its result cap (``search``).

Each registers a :class:`ReadMethod` in :data:`READ_METHODS` (see :mod:`.base`). A new one is a
module imported below, and the key an object declares it with in ``spec.ObjectSpec``.
"""

from __future__ import annotations

from crm_pipelines.connectors.reads.base import READ_METHODS, ObjectRead, ReadMethod, read_method_for
from crm_pipelines.connectors.reads.bulk import BulkQueryJob
from crm_pipelines.connectors.reads.delta import DeltaLink
from crm_pipelines.connectors.reads.search import SearchWindows

__all__ = [
    "READ_METHODS",
    "BulkQueryJob",
    "DeltaLink",
    "ObjectRead",
    "ReadMethod",
    "SearchWindows",
    "read_method_for",
]
