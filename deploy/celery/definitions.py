"""The glan code location for a distributed deployment: the project's definitions
unchanged, with every job's steps sent to Celery workers (`dagster-celery`) instead of
subprocesses of the run.

The broker and result backend come from the environment, the same variables the
workers' config (deploy/celery/celery.yaml) reads:

    DAGSTER_CELERY_BROKER=redis://HOST:6379/0  DAGSTER_CELERY_BACKEND=redis://HOST:6379/1

Load it with deploy/celery/workspace.yaml (`dagster-daemon run -w ...`,
`dagster-webserver -w ...`); the workers reconstruct jobs from this same file, so every
worker needs the repository at the same path (or the package installed and this file).
"""

import dagster as dg
from dagster_celery import celery_executor

import glan_assets.definitions as glan_location

celery = celery_executor.configured(
    {
        "broker": {"env": "DAGSTER_CELERY_BROKER"},
        "backend": {"env": "DAGSTER_CELERY_BACKEND"},
    },
    name="celery",
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(glan_location.defs(), dg.Definitions(executor=celery))
