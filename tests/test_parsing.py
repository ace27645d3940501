"""What small models write instead of clean JSON still parses; nonsense is refused."""

import pytest

from glan_assets.parsing import ParseError, parse_structured
from glan_assets.schemas import SessionList, SubjectList

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
    parsed = parse_structured(text, SubjectList)
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
