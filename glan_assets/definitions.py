"""The Dagster code location: every level's asset, the taxonomy sensor, and resources from
the environment (see `resources/settings.py`)."""

import dagster as dg

from glan_assets.answers import answers
from glan_assets.checks import ALL_CHECKS
from glan_assets.disciplines import disciplines
from glan_assets.fields import fields
from glan_assets.jobs import build_discipline, refresh_taxonomy
from glan_assets.model_checkpoint import model_checkpoint
from glan_assets.questions import questions
from glan_assets.sensors import taxonomy_sensor
from glan_assets.sessions import sessions
from glan_assets.subjects import subjects
from glan_assets.syllabi import syllabi
from glan_assets.taxonomy_proposals import taxonomy_proposals
from glan_assets.training_set import training_set
from resources.settings import resources_from_env

# In method order: the graph reads top to bottom as GLAN does.
GENERATION_ASSETS = [fields, disciplines, subjects, syllabi, sessions, questions, answers]
TRAINING_ASSETS = [training_set, model_checkpoint]

defs = dg.Definitions(
    assets=[taxonomy_proposals, *GENERATION_ASSETS, *TRAINING_ASSETS],
    asset_checks=ALL_CHECKS,
    jobs=[build_discipline, refresh_taxonomy],
    sensors=[
        taxonomy_sensor,
        # training_set is eager: it follows new answers partitions once this sensor runs.
        dg.AutomationConditionSensorDefinition(
            "training_automation",
            target=dg.AssetSelection.assets(training_set),
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
    ],
    resources=resources_from_env(),
)
