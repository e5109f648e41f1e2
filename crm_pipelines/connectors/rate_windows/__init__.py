"""Where an account's shared rate-limit window lives when it must span hosts.

By default the window is a SQLite file on the host (:class:`crm_pipelines.connectors.limits.AccountWindow`):
every process of one machine shares it. Workers on several machines calling one CRM account share
its budget through a server named by ``CRM_PIPELINES_RATE_LIMIT_URL``; the URL's scheme names the
module of this package that implements it (``postgresql://...`` -> :mod:`.postgresql`), so a new
backend is a new module with a ``Window`` class, not a branch here.
"""
