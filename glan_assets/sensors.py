"""Keeps the discipline partitions in step with the taxonomy file.

A new discipline gets its partition and one run that builds exactly its partitions. A
removed one loses its partition and its rows. A changed description re-reads the
taxonomy levels of that discipline, and the UI then shows its generated levels as stale.
"""

import json

import dagster as dg

from glan_assets.jobs import build_discipline, refresh_taxonomy
from glan_assets.partitions import discipline_partitions, partition_changes
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore


@dg.sensor(
    jobs=[build_discipline, refresh_taxonomy],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds, drops and refreshes discipline partitions when the taxonomy file changes.",
)
def taxonomy_sensor(
    context: dg.SensorEvaluationContext, settings: GenerationSettings, store: DuckDBStore
) -> dg.SensorResult:
    taxonomy = settings.taxonomy()  # a bad file fails the tick with file, line and node
    fingerprints = {name: node.fingerprint for name, node in taxonomy.disciplines.items()}
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    registered = context.instance.get_dynamic_partitions(discipline_partitions.name)
    added, removed = partition_changes(registered, list(fingerprints))
    for key in removed:
        context.log.info(f"{key}: removed from the taxonomy; deleted rows {store.delete_discipline(key)}")
    changed = [k for k, fp in fingerprints.items() if k not in added and k in seen and seen[k] != fp]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, job_name=build_discipline.name) for k in added]
        + [dg.RunRequest(partition_key=k, job_name=refresh_taxonomy.name) for k in changed],
        dynamic_partitions_requests=[
            *([discipline_partitions.build_add_request(added)] if added else []),
            *([discipline_partitions.build_delete_request(removed)] if removed else []),
        ],
        cursor=json.dumps(fingerprints, sort_keys=True),
    )
