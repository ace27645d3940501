"""The LLM judge as a stage: one request per pair, its prompt (`glan_assets.quality.prompts`),
a structured verdict (a short reason, then a 1-10 score), greedy sampling. It runs through
`glan_assets.stages.run` like every stage: the same transport, cache, retries, re-asks and
rejects. Its model and sampling are `GLAN_JUDGE_MODEL`, `_TEMPERATURE`, `_TOP_P`, `_PRICE`
(the stage's name), and `judge_llm` points it at an endpoint of its own.
"""

import re

from pydantic import BaseModel, Field, field_validator

from glan_assets.quality.prompts import JUDGE
from glan_assets.stages import Request, Stage
from resources.llm import LLMResource, Sampling

# The request shows at most this much of a pair's instruction and response: the judge's
# context stays bounded (SmolLM2 reads 8k tokens), and a cut is marked so it is not judged
# as the answer's own fault.
SHOWN_CHARS = 4000
REASON_CHARS = 300


class Verdict(BaseModel):
    # The reason first: with constrained decoding, fields are written in the schema's order.
    # maxLength only in the schema, so a constrained reply stops there and a longer free
    # reply is cut here rather than rejected.
    reason: str = Field(min_length=1, json_schema_extra={"maxLength": REASON_CHARS})
    score: int = Field(ge=1, le=10)

    @field_validator("reason")
    @classmethod
    def _short(cls, value: str) -> str:
        value = " ".join(value.split())
        return value if len(value) <= REASON_CHARS else value[: REASON_CHARS - 1] + "…"

    @classmethod
    def from_plain_text(cls, text: str) -> dict | None:
        """A verdict written as prose, the way MT-Bench's judges write it: "Rating: [[7]]",
        "Score: 7/10". Only a marked score counts, never a bare number of the answer's."""
        found = _MARKED.findall(text)
        if not found:
            return None
        score = round(float(found[-1][0] or found[-1][1]))
        reason = _MARKED.sub("", text).strip().strip("{}").strip() or "(no reason given)"
        return {"reason": reason, "score": score}


_MARKED = re.compile(
    r"(?:\b(?:rating|score)\s*[:=]?\s*)?\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"  # MT-Bench's "Rating: [[7]]"
    r"|\b(?:rating|score)\s*[:=]\s*(\d+(?:\.\d+)?)(?:\s*/\s*10)?",  # "Score: 7/10"
    re.IGNORECASE,
)

JUDGE_STAGE = Stage("judge", (JUDGE,), Sampling(temperature=0.0, top_p=1.0, max_tokens=160), Verdict)


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "\n[... cut for the judge]"


def judge_request(pair_id: str, instruction: str, response: str) -> Request:
    """The judge's request for one pair, keyed on the pair so a reject names it."""
    return Request(pair_id, JUDGE.messages(instruction=_shown(instruction), response=_shown(response)))


def judge_llm(llm: LLMResource, base_url: str = "", api_key: str = "") -> LLMResource:
    """The transport the judge uses: the generator's, or the same one pointed at the judge's
    own endpoint (`GLAN_JUDGE_BASE_URL`, with `GLAN_JUDGE_API_KEY`), keeping its cache,
    concurrency, retries and per-stage sampling. Unset, the judge shares the generator's
    endpoint; its model is still its own (`GLAN_JUDGE_MODEL`)."""
    if not base_url:
        return llm
    return llm.model_copy(update={"base_url": base_url, "api_key": api_key})
