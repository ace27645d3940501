"""The reply the test endpoint (`tests/fake_llm.py`) gives UIT's format transfer: the task
shown, under a definition (or a FLAN-style template)."""

from collections.abc import Mapping, Sequence


def fake_reply(messages: Sequence[Mapping[str, str]], switches: Mapping[str, bool]) -> str | None:
    user = messages[-1]["content"]
    if "Rewrite it as a" not in user:
        return None
    if "FLAN-style" in user:
        return "{input}\n\nAnswer as the examples do."
    shown = user.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
    return f"Definition: Answer the input as these examples do.\n\n{shown}"
