"""A method's declaration agrees with its levels', and the training set's upstream with the
levels it names."""

import dataclasses

import dagster as dg
import pytest

from glan_assets.glan import method as glan
from glan_assets.registry import METHODS, TRAINING, level


def test_every_level_of_a_method_names_that_method_and_its_partitions():
    for method in METHODS:
        assert {(lv.method, id(lv.partitions_def)) for lv in method.levels} == {(method.name, id(method.partitions))}


@pytest.mark.parametrize("change", [{"method": "uit"}, {"partitions_def": dg.DynamicPartitionsDefinition(name="other")}])
def test_a_level_that_disagrees_with_its_method_is_refused(change):
    stray = dataclasses.replace(glan.METHOD.levels[-1], **change)
    with pytest.raises(ValueError, match="method 'glan': level 'answers' declares"):
        dataclasses.replace(glan.METHOD, levels=(*glan.METHOD.levels[:-1], stray))


def test_the_training_sets_upstream_is_the_levels_it_names():
    upstream = TRAINING.sources.upstream
    assert list(upstream) == ["answers", "instructions_unified", "dynosaur_instances",
                              "glan_quality", "uit_quality", "dynosaur_quality"]
    for name, partitions in upstream.items():
        assert level(name).partitions_def is partitions, name


def test_every_method_says_what_its_pairs_are_for_the_cards():
    assert all(m.note and m.noun for m in METHODS)



def test_the_training_set_reads_the_methods_the_root_composes():
    assert [m.name for m in TRAINING.sources.methods] == [m.name for m in METHODS]
