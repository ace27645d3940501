"""What small models write instead of clean JSON still parses; nonsense is refused."""

import json

import pytest

from glan_assets.parsing import ParseError, example_echoes, parse_structured
from glan_assets.glan.prompts import SESSIONS
from glan_assets.glan.schemas import SessionList, SubjectList

SUBJECT = '{"subject_name": "Mechanics", "level": "undergraduate", "subtopics": ["motion", "force"]}'


@pytest.mark.parametrize(
    "text",
    [
        '{"subjects": [' + SUBJECT + "]}",
        "Here you go:\n```json\n{\"subjects\": [" + SUBJECT + "]}\n```\nHope it helps",
        "[" + SUBJECT + "]",
        SUBJECT + "\n" + SUBJECT.replace("Mechanics", "Optics"),
        '{"subjects": [' + SUBJECT[:-1],  # truncated mid-object
    ],
)
def test_tolerant_parsing(text):
    parsed = parse_structured(text, SubjectList).value
    assert parsed.subjects[0].subject_name == "Mechanics"
    assert parsed.subjects[0].subtopics == ["motion", "force"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty completion"),
        ("Session one covers motion.", "no JSON found"),
        ('{"sessions": [{"title": "Intro", "key_concepts": ["  "]}]}', "does not match SessionList"),
    ],
)
def test_unusable_output_says_why(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_structured(text, SessionList)


def test_a_list_keeps_its_valid_items_and_says_which_it_dropped():
    broken = '{"subject_name": "Optics", "level": "undergraduate", "subtopics": []}'
    parsed = parse_structured('{"subjects": [' + SUBJECT + ", " + broken + "]}", SubjectList)
    assert [s.subject_name for s in parsed.value.subjects] == ["Mechanics"]
    (dropped,) = parsed.dropped
    assert dropped.index == 2
    assert "Optics" in dropped.raw
    assert "subtopics" in dropped.reason


def test_repeated_list_items_collapse_to_one_each():
    looping = '{"subject_name": "Physics", "level": "high school", "subtopics": ["Optics", "Heat", "Optics", " Optics "]}'
    (subject,) = parse_structured(looping, SubjectList).value.subjects
    assert subject.subtopics == ["Optics", "Heat"]


def test_items_copied_from_the_worked_example_are_dropped():
    messages = SESSIONS.messages(syllabus="Session 1: Optics - lenses, mirrors\nSession 2: Waves - interference")
    echoes = example_echoes(messages)
    reply = (
        '{"sessions": [{"title": "Optics", "key_concepts": ["lenses", "mirrors"]}, '
        '{"title": "Cells", "key_concepts": ["membranes", "organelles", "cell division"]}]}'
    )
    parsed = parse_structured(reply, SessionList, echoes)
    assert [s.title for s in parsed.value.sessions] == ["Optics"]
    assert "repeats the worked example" in parsed.dropped[0].reason

    only_copies = '{"sessions": [{"title": "Genetics", "key_concepts": ["DNA", "genes", "inheritance"]}]}'
    with pytest.raises(ParseError, match="every item repeats the worked example"):
        parse_structured(only_copies, SessionList, echoes)


def test_what_the_input_itself_says_is_not_an_echo():
    messages = SESSIONS.messages(syllabus="Week 1: Genetics - DNA, genes, inheritance")
    reply = '{"sessions": [{"title": "Genetics", "key_concepts": ["DNA", "genes", "inheritance"]}]}'
    assert parse_structured(reply, SessionList, example_echoes(messages)).value.sessions[0].title == "Genetics"


def test_a_syllabus_outline_instead_of_json_still_gives_its_sessions():
    copied_syllabus = (
        "Here is the syllabus.\n\n**Session 1: Motion**\nKey concepts: velocity, acceleration\n\n"
        "Session 2 - Forces\n- Newton's laws\n- friction: the force that opposes sliding\n\n"
        "Week 3: Energy - work, power, conservation of energy\n"
    )
    sessions = parse_structured(copied_syllabus, SessionList).value.sessions
    assert [(s.title, s.key_concepts) for s in sessions] == [
        ("Motion", ["velocity", "acceleration"]),
        ("Forces", ["Newton's laws", "friction"]),
        ("Energy", ["work", "power", "conservation of energy"]),
    ]


def test_an_outline_session_without_key_concepts_is_left_out():
    sessions = parse_structured("Lecture 1: Optics\nLecture 2: Waves\n- interference", SessionList).value.sessions
    assert [s.title for s in sessions] == ["Waves"]


def test_key_names_models_use_instead_of_the_schemas_are_accepted():
    reply = '{"subjects": [{"name": "Optics", "subject_level": "undergraduate", "topics": ["lenses"]}]}'
    (subject,) = parse_structured(reply, SubjectList).value.subjects
    assert (subject.subject_name, subject.level, subject.subtopics) == ("Optics", "undergraduate", ["lenses"])
    assert "subject_level" not in json.dumps(SubjectList.model_json_schema())
