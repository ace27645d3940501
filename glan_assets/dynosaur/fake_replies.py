"""The reply the test endpoint (`tests/fake_llm.py`) gives Dynosaur's task stage: two tasks
over the listed fields."""

import json
import re
from collections.abc import Mapping, Sequence


def fake_reply(messages: Sequence[Mapping[str, str]], switches: Mapping[str, bool]) -> str | None:
    user = messages[-1]["content"]
    if "instruction tasks over this dataset" not in user:
        return None
    fields = json.loads(re.search(r"^Fields \(JSON\): (.+)$", user, re.MULTILINE).group(1))
    first, last = fields[0], fields[-1]
    return json.dumps({"tasks": [
        {"instruction": f"Given the {', '.join(fields[:-1])}, give the {last}.", "input_fields": fields[:-1], "output_field": last},
        {"instruction": f"Given the {last}, give the {first}.", "input_fields": [last], "output_field": first},
    ]})
