"""The ways to read an object besides walking its declared pages, chosen by what the object declares.

* :mod:`.bulk`: Salesforce Bulk API 2.0 query jobs for big windows (``bulk``).
* :mod:`.search`: HubSpot CRM search split into time windows under its result cap (``search``).
* :mod:`.delta`: change tracking through delta links (``incremental.delta``).
"""
