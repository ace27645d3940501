"""The LLM judge's prompt.

The rubric is MT-Bench's single-answer grading: one 1-10 score after a short explanation
(Zheng et al., 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", NeurIPS
Datasets and Benchmarks; the prompt `single-v1` in FastChat's `llm_judge/data/judge_prompts.jsonl`,
Apache-2.0), reworded here, with its score bands written out.

Why it and not UltraFeedback's four 1-5 aspects (instruction following, truthfulness,
honesty, helpfulness, each with its rationale): one score is one short structured reply,
a quarter of the output tokens, which matters on the embedded model; selection needs one
threshold, not four; and MT-Bench reports that a strong judge's single scores agree with
human experts about as often as experts agree with each other. The reason comes before the
score, as MT-Bench asks, so the score is written after the judge has looked at the answer.

No worked example: a small model copies a demonstrated score (see `glan_assets.parsing`).
"""

from glan_assets.prompting import Prompt

JUDGE = Prompt(
    "judge",
    system=(
        "You are an impartial judge of answers written by an AI assistant. Judge how well the answer "
        "fulfils the user's request: its helpfulness, relevance, accuracy, completeness and clarity. "
        "Do not let the answer's length sway you, and do not reward an answer for restating the request. "
        "First give a short reason, one or two sentences, then a score from 1 to 10:\n"
        "1-3: fails the request (off topic, wrong, empty, cut off, a refusal or a copy of the request);\n"
        "4-6: partly fulfils it (correct in part, incomplete or unclear);\n"
        "7-9: fulfils it well, with small flaws at most;\n"
        "10: a complete, correct and clear answer that could not be improved.\n"
        'Reply with JSON only: {{"reason": "...", "score": N}}'
    ),
    user="[Request]\n{instruction}\n\n[Answer]\n{response}\n[End of answer]",
)
