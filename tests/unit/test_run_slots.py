"""`RunSlots`: a parallel build's runs take a slot to build their levels and give it to the
next partition once only their last level is left (a run of one level: once it has landed),
or when they end."""

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


def test_the_next_run_starts_once_only_the_last_level_of_a_run_is_left():
    plans = [PartitionPlan("Physics", ("subjects", "questions", "answers"), "new"),
             PartitionPlan("Optics", ("subjects",), "new")]
    slots = RunSlots(1, plans)
    with slots.slot("Physics"):
        thread, started = waits_for_a_slot(slots, "Optics")
        slots.landed(landed("Physics", "subjects"))
        assert not started.wait(0.2)  # two levels still to come
        slots.landed(landed("Physics", "questions"))
        assert started.wait(5)  # Physics builds its answers beside Optics's first levels
        thread.join()
        slots.landed(landed("Physics", "answers"))  # not given a second time
    # Physics's run ends after it gave its slot back: the slot is not given twice.
    with slots.slot("Optics"):
        thread, started = waits_for_a_slot(slots, "Physics")
        assert not started.wait(0.2)
    thread.join()


def test_a_run_of_one_level_holds_its_slot_until_the_level_has_landed():
    slots = RunSlots(1, [PartitionPlan("Physics", ("answers",), "new"), PartitionPlan("Optics", ("answers",), "new")])
    with slots.slot("Physics"):
        thread, started = waits_for_a_slot(slots, "Optics")
        assert not started.wait(0.2)
        slots.landed(landed("Physics", "answers"))
        assert started.wait(5)
        thread.join()


def test_a_run_that_ends_early_gives_its_slot_back():
    slots = RunSlots(1, [PartitionPlan("Physics", ("subjects", "answers"), "new")])
    with slots.slot("Physics"):
        slots.landed(landed("Physics", "subjects"))  # then its run fails
    with slots.slot("Physics"):  # free again
        pass
