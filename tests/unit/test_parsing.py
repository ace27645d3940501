"""What small models write instead of clean JSON still parses; nonsense is refused."""

import json

import pytest

from glan_assets.parsing import CUT, TRUNCATED, Cut, ParseError, example_echoes, parse_structured
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
        # Almost-JSON that is complete: json-repair's value is kept.
        "{'subjects': [{'subject_name': 'Mechanics', 'level': 'undergraduate', 'subtopics': ['motion', 'force',],},]}",
        '{"subjects": [' + SUBJECT + ",]}\nHope it's what you need, don't hesitate to ask [more",
        '{"subjects": [' + SUBJECT[:-1] + ', "note": "a \\"quoted\\" ] } word",},]}',  # brackets in a string
    ],
)
def test_tolerant_parsing(text):
    parsed = parse_structured(text, SubjectList)
    assert parsed.value.subjects[0].subject_name == "Mechanics"
    assert parsed.value.subjects[0].subtopics == ["motion", "force"]
    assert not parsed.cut and not parsed.dropped


SESSIONS_TEXT = (
    '{"sessions": [{"title": "Stub method [1] \\"basics\\"", "key_concepts": ["Stub method history law 7f3a9c", "b"]}, '
    '{"title": "Second session", "key_concepts": ["Stub method history law 7f3a9c", '
    '"Stub method history law 8e21d0"]}]}'
)


def prefix_of_a_value(parsed, full: str) -> list[str]:
    """Stored strings that are strict prefixes of a value of the full reply."""
    whole = [s for item in json.loads(full)["sessions"] for s in [item["title"], *item["key_concepts"]]]
    stored = [s for item in parsed.value.sessions for s in [item.title, *item.key_concepts]]
    return [s for s in stored if s not in whole and any(w.startswith(s) for w in whole)]


SECOND = SESSIONS_TEXT.index('{"title": "Second')


def test_a_reply_cut_anywhere_in_its_second_item_keeps_only_the_first():
    """json-repair mends a cut reply into valid JSON whose last value is cut short ('Stub
    method hist'); a value the repair closed is never data."""
    for cut_at in range(SECOND + 1, len(SESSIONS_TEXT) - 2):  # up to the item's closing brace
        text = SESSIONS_TEXT[:cut_at]
        parsed = parse_structured(text, SessionList)
        assert parsed.cut, text
        assert not prefix_of_a_value(parsed, SESSIONS_TEXT), text
        assert [s.title for s in parsed.value.sessions] == ['Stub method [1] "basics"'], text
        assert parsed.value.sessions[0].key_concepts == ["Stub method history law 7f3a9c", "b"], text
        (dropped,) = parsed.dropped
        assert dropped.index == 2 and dropped.reason == CUT, text
        assert dropped.raw == text[SECOND:].rstrip(), text  # the cut item as written


def test_the_issues_cut_concept_is_not_stored():
    cut = SESSIONS_TEXT[: SESSIONS_TEXT.index("history law 8e21d0")]  # ends '..."Stub method '
    parsed = parse_structured(cut, SessionList)
    assert parsed.cut and not prefix_of_a_value(parsed, SESSIONS_TEXT)
    assert "Stub method" not in [c for s in parsed.value.sessions for c in s.key_concepts]
    assert parsed.dropped[0].raw.startswith('{"title": "Second session"') and parsed.dropped[0].reason == CUT


def test_a_reply_cut_between_items_says_later_items_may_be_missing():
    parsed = parse_structured('{"subjects": [' + SUBJECT + ", ", SubjectList)
    assert parsed.cut and [s.subject_name for s in parsed.value.subjects] == ["Mechanics"]
    (dropped,) = parsed.dropped
    assert (dropped.index, dropped.raw) == (2, "") and "may be missing" in dropped.reason


@pytest.mark.parametrize(
    "text",
    [
        '{"subjects": [' + SUBJECT[:-1],  # the only item cut before its last brace
        '{"subjects": [{"subject_name": "Mech',
        SUBJECT[:40],  # a bare item
        "[" + SUBJECT[:-3],  # a bare list
        '{"subj',
    ],
)
def test_a_reply_cut_before_any_item_was_complete_is_cut(text):
    with pytest.raises(Cut, match="^truncated"):
        parse_structured(text, SubjectList)


def test_a_cut_bare_list_and_cut_json_lines_keep_their_complete_items():
    optics = SUBJECT.replace("Mechanics", "Optics")
    for text in ("[" + SUBJECT + ", " + optics[:30], SUBJECT + "\n" + optics[:30]):
        parsed = parse_structured(text, SubjectList)
        assert parsed.cut and [s.subject_name for s in parsed.value.subjects] == ["Mechanics"]
        assert parsed.dropped[0].index == 2 and parsed.dropped[0].raw == optics[:30]


def test_pretty_printed_json_is_not_read_as_json_lines():
    """Its lines that start with a brace are not items of their own: the first, alone, had
    been a `{}` item and a reject."""
    text = json.dumps({"subjects": [json.loads(SUBJECT), json.loads(SUBJECT.replace("Mechanics", "Optics"))]}, indent=2)
    parsed = parse_structured(text, SubjectList)
    assert [s.subject_name for s in parsed.value.subjects] == ["Mechanics", "Optics"]
    assert not parsed.dropped and not parsed.cut


def test_at_max_tokens_a_complete_reply_loses_its_last_item_and_a_cut_one_only_the_cut_item():
    optics = SUBJECT.replace("Mechanics", "Optics")
    closed = parse_structured('{"subjects": [' + SUBJECT + ", " + optics + "]}", SubjectList, truncated=True)
    assert [s.subject_name for s in closed.value.subjects] == ["Mechanics"] and not closed.cut
    assert closed.dropped[0].reason == TRUNCATED and "Optics" in closed.dropped[0].raw
    cut = parse_structured('{"subjects": [' + SUBJECT + ", " + optics[:50], SubjectList, truncated=True)
    assert [s.subject_name for s in cut.value.subjects] == ["Mechanics"] and cut.cut
    assert cut.dropped[0].reason == TRUNCATED and cut.dropped[0].raw == optics[:50]


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
