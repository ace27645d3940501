"""The replies the test endpoint (`tests/fake_llm.py`) gives GLAN's stages: deterministic,
built from the prompt. `switches`: "outline" writes syllabi as the syllabus prompt's worked
example does; "broken" makes one listed subject break the schema (no subtopics)."""

import json
import re
from collections.abc import Mapping, Sequence


def fake_reply(messages: Sequence[Mapping[str, str]], switches: Mapping[str, bool]) -> str | None:
    system, user = messages[0]["content"], messages[-1]["content"]
    if "Extract every subject" in user:
        topic = re.search(r"Subjects of (.+?):", user)
        name = topic.group(1) if topic else "General"
        return json.dumps({"subjects": [
            {"subject_name": f"Introduction to {name}", "level": "undergraduate", "subtopics": ["basics", "history"]},
            {"subject_name": f"Advanced {name}", "level": "graduate", "subtopics": ["theory", "practice"]},
            {"subject_name": f"{name} Lab", "level": "undergraduate",
             "subtopics": [] if switches.get("broken") else ["experiments"]},
        ]})
    if "List the subjects" in user:
        name = re.search(r'learn in "(.+?)"', user).group(1)
        return f"Subjects of {name}: Introduction to {name}; Advanced {name}; {name} Lab."
    if "Write the syllabus" in user:
        course = re.search(r'course "(.+?)"', user).group(1)
        if switches.get("outline"):
            return (f"Session 1: Foundations of {course}\nKey concepts: definitions, units\n\n"
                    f"Session 2: Methods of {course}\nKey concepts: models, measurement")
        return f"Syllabus of {course}.\nSession 1: Foundations of {course}.\nSession 2: Methods of {course}.\nSession 3: Frontiers."
    if "Extract the class sessions" in user:
        course = re.search(r"Syllabus of (.+?)\.", user).group(1)
        return json.dumps({"sessions": [
            {"title": f"Foundations of {course}", "key_concepts": ["definitions", "units", "notation"]},
            {"title": f"Methods of {course}", "key_concepts": ["models", "measurement"]},
            {"title": "Frontiers", "key_concepts": ["open problems", "research"]},
        ]})
    if "homework question" in user:
        concepts = re.search(r"key concepts: (.+?)\. Reply", user).group(1)
        course = re.search(r"teacher of (.+?)\.", system).group(1)
        return f"In {course}, explain {concepts}?"
    if "knowledgeable and helpful assistant" in system:  # answers: about the question, not a copy of it
        topic = found.group(1) if (found := re.search(r"explain (.+?)\?", user)) else user
        return (f"Each of {topic} is best learned from its definition. Work through one example of each "
                "step by step, then check the result against the definition.")
    if re.search(r"Propose up to \d+ further", user):  # taxonomy proposals (Dynosaur's prompt proposes tasks)
        return json.dumps({"proposals": [{"name": "Proposed Node", "reason": "missing"}]})
    return None
