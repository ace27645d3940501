"""`RunSlots`: a parallel build's runs take a slot to build their levels and give it to the
next partition once their last level has landed, or when they end."""

import threading

from glan_assets.build import LevelProgress, LevelSummary, RunSlots
from glan_assets.plan import PartitionPlan


def landed(partition: str, level: str) -> LevelProgress:
    return LevelProgress(partition, LevelSummary(level, 1, 0, 0, 0, 0, False), 0.0)


def waits_for_a_slot(slots: RunSlots, partition: str) -> tuple[threading.Thread, threading.Event]:
    started = threading.Event()

    def run() -> None:
        with slots.slot(partition):
            started.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, started


def test_the_next_run_starts_once_the_last_level_of_a_run_has_landed():
    plans = [PartitionPlan("Physics", ("subjects", "answers"), "new"), PartitionPlan("Optics", ("subjects",), "new")]
    slots = RunSlots(1, plans)
    with slots.slot("Physics"):
        thread, started = waits_for_a_slot(slots, "Optics")
        slots.landed(landed("Physics", "subjects"))
        assert not started.wait(0.2)  # one level still to come
        slots.landed(landed("Physics", "answers"))
        assert started.wait(5)  # Physics still checks its levels
        thread.join()
    # Physics's run ends after it gave its slot back: the slot is not given twice.
    with slots.slot("Optics"):
        thread, started = waits_for_a_slot(slots, "Physics")
        assert not started.wait(0.2)
    thread.join()


def test_a_run_that_ends_early_gives_its_slot_back():
    slots = RunSlots(1, [PartitionPlan("Physics", ("subjects", "answers"), "new")])
    with slots.slot("Physics"):
        slots.landed(landed("Physics", "subjects"))  # then its run fails
    with slots.slot("Physics"):  # free again
        pass
