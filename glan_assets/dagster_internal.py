"""Every call glan makes into Dagster's internals, in one place: Dagster has no public API
for these. Checked on dagster 1.13.27 (what pyproject.toml pins); `tests/test_orphans.py`
fails when an upgrade breaks them.
"""

import dagster as dg


def free_pool_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Release the pool slots (`pool="llm"`) a run's steps still hold. A run that dies
    mid-step never releases its own, and enough of them stall every later run's LLM steps.
    Dagster's run monitoring daemon frees finished runs' slots with the same call."""
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def pool_slot_holders(instance: dg.DagsterInstance, pool: str) -> list[str]:
    """The run ids holding slots of `pool`, one per slot (what the UI's Pools page lists)."""
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots]


# How Dagster writes a `dg.Failure` raised in a step into the step's error text: the exception's
# import path, which is internal. `failure_text` strips it so the user reads their own message.
FAILURE_PREFIX = "dagster._core.definitions.events.Failure: "


def failure_text(message: str) -> str:
    return message.removeprefix(FAILURE_PREFIX)
