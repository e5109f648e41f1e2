"""What the nightly job's step processes share: imported once by the multiprocess executor's fork server.

With ``start_method: forkserver`` and ``preload_modules: [crm_pipelines.preload]`` (``jobs.py``), the
fork server imports the code location and builds its definitions once; every step process is
forked from it and starts at once, instead of spending seconds of CPU importing Dagster, pandas,
DuckDB and the project and building ~150 assets from YAML, as a spawned process does per step.
"""

from crm_pipelines import definitions

definitions.preload()
