"""The Celery app the step workers run: ``celery -A crm_pipelines.celery_worker worker``.

It is dagster-celery's own app and step task, configured from :mod:`crm_pipelines.executors` (the
broker in ``CRM_PIPELINES_CELERY_BROKER``, late acknowledgement), so the workers and the runs that
send them steps agree. A worker runs steps against the instance in the run's request (the shared
``DAGSTER_HOME``, PostgreSQL in ``deploy/dagster.yaml``). Add ``-I crm_pipelines.preload`` to build
the code location's definitions once in the worker, before it forks its pool processes.
"""

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from crm_pipelines.executors import celery_app_arguments

app = make_app(celery_app_arguments())
execute_plan = create_task(app)
