"""The write side: upserts by external id, batched the way each system allows, one result per record.

The styles a system can declare (``upsert.style`` in its YAML, see docs/connectors.md):

* ``sobject_collections``: Salesforce sObject Collections upsert, ``allOrNone: false``.
* ``hubspot_batch``: HubSpot batch upsert by ``idProperty``; results matched back by key.
* ``json_batch``: one JSON request per batch answered by a list of per-record results in order
  (Zoho ``/{module}/upsert``).
* ``odata_batch``: a multipart ``$batch`` of per-record requests with continue-on-error (Dynamics
  365 upserts by alternate key; SAP Business One).
* ``subrequests``: a JSON batch of sub-requests, one response each (SugarCRM ``/bulk``, Creatio's
  JSON ``$batch``).
* ``per_record``: one request per record, after a lookup by external id where the system cannot
  upsert by it (Pipedrive, Infor CRM, Sage CRM), or an update by key that becomes a create when the
  key is not found (SAP Business One), several in flight.
* ``collection_item``: an update of an item that lives in a collection inside its parent, sent as
  the parent with that one item (SAP Business One contact persons inside business partners).

Nothing is dropped: a record the system rejects with a retryable code is sent again, any other
rejection comes back with the system's code and message, and a batch refused as a whole (HTTP 400) is
split in halves until the offending records stand alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crm_pipelines.connectors.writes.base import UPSERT_STYLES, UpsertModel
from crm_pipelines.connectors.writes.collection_item import CollectionItemUpdate
from crm_pipelines.connectors.writes.hubspot_batch import HubSpotBatchUpsert
from crm_pipelines.connectors.writes.json_batch import JsonBatchUpsert
from crm_pipelines.connectors.writes.odata_batch import ODataBatchUpsert
from crm_pipelines.connectors.writes.per_record import ConfirmSpec, LookupSpec, PerRecordUpsert, RecordRequest
from crm_pipelines.connectors.writes.sobject_collections import SObjectCollectionsUpsert
from crm_pipelines.connectors.writes.subrequests import SubrequestItem, SubrequestsUpsert
from crm_pipelines.connectors.writes.upsert import UpsertResult, WriteStats, update_records, upsert_records

__all__ = [
    "UPSERT_STYLES",
    "CollectionItemUpdate",
    "ConfirmSpec",
    "HubSpotBatchUpsert",
    "JsonBatchUpsert",
    "LookupSpec",
    "ODataBatchUpsert",
    "PerRecordUpsert",
    "RecordRequest",
    "SObjectCollectionsUpsert",
    "SubrequestItem",
    "SubrequestsUpsert",
    "UpsertModel",
    "UpsertResult",
    "UpsertSpec",
    "WriteStats",
    "update_records",
    "upsert_records",
]

# The union an object's `upsert:` validates against, built from every registered style (the modules
# imported above); mypy sees the base model.
if TYPE_CHECKING:
    UpsertSpec = UpsertModel
else:
    UpsertSpec = UPSERT_STYLES.union()
