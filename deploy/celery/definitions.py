"""The glan code location for a distributed deployment: the project's definitions
unchanged, with every job's steps sent to Celery workers (`dagster-celery`) instead of
subprocesses of the run.

The broker and result backend come from Celery's own variables, which the workers read too
(deploy/celery/celery.yaml): Redis with a password, over TLS between machines:

    CELERY_BROKER_URL='rediss://:PASSWORD@HOST:6379/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/certs/ca.pem'
    CELERY_RESULT_BACKEND='rediss://:PASSWORD@HOST:6379/1?ssl_cert_reqs=required&ssl_ca_certs=...'

Set them from a secret file when the process starts (deploy/README.md), never in a file here.

Load it with deploy/celery/workspace.yaml (`dagster-daemon run -w ...`,
`dagster-webserver -w ...`); the workers reconstruct jobs from this same file, so every
worker needs the repository at the same path (or the package installed and this file).
"""

import dagster as dg
from dagster_celery import celery_executor

import glan_assets.definitions as glan_location

celery = celery_executor.configured(
    {
        "broker": {"env": "CELERY_BROKER_URL"},
        "backend": {"env": "CELERY_RESULT_BACKEND"},
    },
    name="celery",
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(glan_location.defs(), dg.Definitions(executor=celery))
