"""Each Dagster internal glan relies on (glan_assets/dagster_internal.py), checked against the
installed Dagster: an upgrade that changes one fails here, not in a user's build."""

import dagster as dg

from glan_assets.build import failure_message
from glan_assets.dagster_internal import FAILURE_PREFIX


def test_a_failure_raised_in_a_step_reads_as_its_own_message():
    @dg.asset
    def refuses() -> None:
        raise dg.Failure(description="no usable rows (3 rejects)")

    result = dg.materialize([refuses], raise_on_error=False)
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    while error.cause is not None:
        error = error.cause
    assert error.message.startswith(FAILURE_PREFIX)  # the text Dagster writes today
    assert failure_message(result) == "refuses: no usable rows (3 rejects)"
