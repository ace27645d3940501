"""Deterministic, explainable rules over one instruction/response pair. Each returns a `Flag`
(its name, the value it measured, and why) or None; `check` runs them all.

Most rules read the pair alone. A few need what the pair was made from (`PairContext`): the
worked examples of its method's prompts, a UIT task's gold instances, a Dynosaur task's
fields. The rules come from the methods and from the cleaning the field does around them:
Alpaca-style cleaning (empty, cut-off and refusal outputs, outputs that repeat the
instruction), Gopher's repetition filter, the Dynosaur paper's task filter, and the defects
issue 24 found in the demo's own training set (a GLAN "question" that asks nothing, UIT
demonstrations whose labels contradict the collection's).
"""

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from glan_assets.quality.settings import QualitySettings


@dataclass(frozen=True)
class Flag:
    rule: str
    value: float  # what the rule measured (a share, a count; 1.0 for a plain yes)
    reason: str


@dataclass(frozen=True)
class PairContext:
    """What a rule needs beyond the pair's text; every field is optional."""

    source: str = ""  # glan, dynosaur, uit
    # The instance's input, where the instruction holds one (Dynosaur's `field: value` lines,
    # a UIT instance's input): copying it is told apart from copying the task's text.
    input: str = ""
    # Strings of the method's worked examples that the pair's own material does not hold
    # (`example_strings(method.worked_examples, own)`): an instruction holding one copied
    # the demonstration.
    worked_examples: frozenset[str] = frozenset()
    # UIT: the task's gold (input, output) instances, as its collection states them.
    gold: tuple[tuple[str, str], ...] = ()
    # Dynosaur: the task's fields, and this instance's input values by field.
    input_fields: tuple[str, ...] = ()
    output_field: str = ""
    input_values: Mapping[str, str] = field(default_factory=dict)


WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def _norm(text: str) -> str:
    return " ".join(_words(text))


def _quote(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


# --- length -------------------------------------------------------------------------------

def empty_response(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    if not _words(response):
        return Flag("empty_response", 0.0, "the response has no words")
    return None


# An instruction that asks for reasoning or exposition, not a label or a name.
_EXPLAIN = re.compile(
    r"\b(explain|describe|discuss|compare|contrast|derive|prove|justify|analy[sz]e|elaborate|"
    r"step[- ]by[- ]step|in detail|write an? (essay|paragraph|story|letter|summary|report)|why)\b",
    re.IGNORECASE,
)
# An instruction that lists the answers it accepts (Dynosaur's "Answers must be one of: ...").
_LABELS_LISTED = re.compile(r"answers? must be one of|one of the following labels|answer with (a|one) (single )?word", re.IGNORECASE)
# ... or that may be answered by a label: "true or false", "yes or no".
_LABELLED = re.compile(_LABELS_LISTED.pattern + r"|\b(positive|yes|true)[\"'”]? or [\"'“]?(negative|no|false)\b", re.IGNORECASE)


def task_text(instruction: str, ctx: PairContext) -> str:
    """What the instruction itself asks: without the instance's input and without the
    definition's demonstrations (a passage in either may say "why" or "prove")."""
    head, found, _ = instruction.rpartition(ctx.input) if ctx.input else ("", "", instruction)
    paragraphs = re.split(r"\n\s*\n", head if found else instruction)
    return "\n\n".join(p for p in paragraphs if p.strip() and not _DEMO.search("\n" + p))


def too_short(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    """Too few words for an instruction that asks for an explanation (and names no labels:
    "explain whether it is true or false" may be answered either way)."""
    n = len(_words(response))
    task = task_text(instruction, ctx)
    if 0 < n < s.min_explained_words and (asked := _EXPLAIN.search(task)) and not _LABELLED.search(task):
        return Flag("too_short", n, f"{n} words for an instruction that asks to {asked.group(0).lower()!r} (under {s.min_explained_words})")
    return None


def too_long(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    """A runaway reply, or more than a label where the instruction lists its labels (and asks
    for no explanation: a "true or false?" question may be answered with reasons)."""
    n = len(_words(response))
    if n > s.max_response_words:
        return Flag("too_long", n, f"{n} words, more than {s.max_response_words}")
    task = task_text(instruction, ctx)
    if n > s.max_label_words and _LABELS_LISTED.search(task) and not _EXPLAIN.search(task):
        return Flag("too_long", n, f"{n} words where the instruction asks for a label (at most {s.max_label_words})")
    return None


# --- repetition and copies ----------------------------------------------------------------

def repeated_ngram_share(text: str, n: int = 5) -> float:
    """Gopher's measure: the share of the text's word characters that lie in word n-grams
    occurring more than once."""
    words = _words(text)
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = [True] * n
    total = sum(len(w) for w in words)
    return sum(len(w) for w, c in zip(words, covered) if c) / total if total else 0.0


_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)


def repeated_line_share(text: str) -> float:
    """Gopher's other measure: the share of the text's non-empty lines that repeat an earlier
    one, list markers ("1.", "-") aside."""
    lines = [_norm(_LIST_MARK.sub("", ln)) for ln in text.splitlines() if _words(ln)]
    return (len(lines) - len(set(lines))) / len(lines) if len(lines) >= 3 else 0.0


def repetition(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    share = repeated_ngram_share(response)
    if share > s.max_repeated_ngram_share:
        return Flag("repetition", round(share, 3), f"{share:.0%} of the response's characters are in repeated 5-word runs")
    lines = repeated_line_share(response)
    if lines > s.max_repeated_line_share:
        return Flag("repetition", round(lines, 3), f"{lines:.0%} of the response's lines repeat an earlier one")
    return None


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 0))} or ({tuple(words)} if words else set())


def _copied(source: list[str], said: list[str]) -> tuple[float, float]:
    """(share of `said`'s words in n-grams of `source`, share of `source`'s n-grams in `said`),
    n = 4, or the shorter text's length."""
    if not source or not said:
        return 0.0, 0.0
    n = min(4, len(source), len(said))
    shared = _grams(source, n) & _grams(said, n)
    copied = [False] * len(said)
    for i in range(len(said) - n + 1):
        if tuple(said[i : i + n]) in shared:
            copied[i : i + n] = [True] * n
    return sum(copied) / len(said), len(shared) / len(_grams(source, n))


def copies_instruction(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    said = _words(response)
    # Each paragraph of the task's text and the instance's input are measured apart: a title
    # that is the whole article copies its input, a reply that is the task's definition
    # copies the task (though demonstrations follow it), and a span an extractive answer
    # takes from a long passage is neither.
    head, found, _ = instruction.rpartition(ctx.input) if ctx.input else ("", "", instruction)
    parts = [("instruction", p) for p in re.split(r"\n\s*\n", head if found else instruction) if p.strip()]
    parts.append(("input", ctx.input))
    limit = s.max_instruction_copy_share
    for part, text in parts:
        of_response, of_part = _copied(_words(text), said)
        if of_response >= limit and of_part >= limit:
            return Flag(
                "copies_instruction", round(of_response, 3),
                f"{of_response:.0%} of the response repeats the {part} (and {of_part:.0%} of the {part})",
            )
    return None


def copies_example(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    text = _norm(instruction)
    copied = sorted(e for e in ctx.worked_examples if e in text)
    if copied:
        return Flag("copies_example", len(copied), f"the instruction holds the prompt's worked example: {_quote(copied[0])}")
    return None


def json_strings(answer: str) -> list[str]:
    """The string values of a worked example's JSON answer (none when it is not JSON)."""
    try:
        value = json.loads(answer)
    except ValueError:
        return []

    def leaves(v: object) -> Iterator[str]:
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict | list):
            for x in v.values() if isinstance(v, dict) else v:
                yield from leaves(x)

    return list(leaves(value))


def example_strings(examples: Iterable[str], own: str = "") -> frozenset[str]:
    """The examples normalized, those of at least 4 words, less those `own` holds (the pair's
    own material, e.g. a UIT task's source view): a phrase its input shares is no copy.

    A Dynosaur dataset whose task reads word for word like the example's (a film-review
    dataset, say) is flagged too: a rule cannot tell that coincidence from a copy, and the
    flag's reason names the string.
    """
    mine = _norm(own)
    normalized = {_norm(e) for e in examples}
    return frozenset(e for e in normalized if len(e.split()) >= 4 and e not in mine)


# --- what the instruction asks ------------------------------------------------------------

_ASKS = re.compile(
    # At a sentence's or clause's start: "In Physics, explain ..." asks as "Explain ..." does.
    r"(^|[.!?:;,\n]\s*)(please\s+)?(explain|describe|discuss|compare|contrast|derive|prove|show|calculate|compute|"
    r"find|determine|estimate|evaluate|solve|write|list|name|give|identify|define|state|outline|summari[sz]e|"
    r"analy[sz]e|design|propose|suggest|classify|translate|simplify|convert|predict|justify|illustrate|"
    r"construct|draw|sketch|assess|critique|argue|apply|use|imagine|suppose|consider)\b",
    re.IGNORECASE,
)
# Text about a question rather than a question: what a small model writes when it mixes up
# the roles (issue 24's "Here's a possible answer: ... This is a hard homework question").
_META = re.compile(
    r"^\s*(here'?s|here is) (a|an|the) (possible |sample )?(answer|question|response)|"
    r"\bthis is an? (hard|harder|basic|easy|homework|sample)[\w\s]{0,20} question\b",
    re.IGNORECASE,
)


def asks_nothing(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    if ctx.source != "glan":  # other methods' instructions are task definitions over an input
        return None
    if meta := _META.search(instruction):
        return Flag("asks_nothing", 1.0, f"the instruction talks about a question instead of asking one: {_quote(meta.group(0))}")
    if "?" not in instruction and not _ASKS.search(instruction):
        return Flag("asks_nothing", 1.0, "the instruction has no question mark and asks for nothing (explain, calculate, ...)")
    return None


# --- the response's form ------------------------------------------------------------------

_REFUSAL = re.compile(
    r"\b(as an ai( language)? model|as a language model|i('m| am) (just )?an ai\b|"
    r"i('m| am) sorry,? but i (can(no|')t|am unable|won't)|i (can(no|')t|am unable to|won't) "
    r"(help|assist|answer|provide|comply|do that)|i do(n't| not) have (access|the ability|personal)|"
    r"i('m| am) not able to (help|answer|provide))",
    re.IGNORECASE,
)


def refusal(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    if found := _REFUSAL.search(response):
        return Flag("refusal", 1.0, f"refusal or assistant boilerplate: {_quote(found.group(0))}")
    return None


_ENDS = tuple(".!?…\"'”’)]}>*`|$")
_STRUCTURED_LINE = re.compile(r"^\s*([-*•>|#]|\d+[.)]|[A-Za-z][.)]\s|```|\$\$|\\\]|</?\w+>)")
_DANGLING = {"and", "or", "but", "the", "a", "an", "of", "to", "in", "with", "for", "because", "that", "which"}
_SENTENCE_END = re.compile(r"[.!?][\"'”’)]*\s+\S")


def cut_off(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    """A reply that ends on a colon, comma or dash, or on "and", "the", "of"..., or whose
    last sentence lacks the end punctuation its earlier ones have. A single sentence without
    a full stop is not flagged: short human-written answers often have none (2 of the 200
    DuoRC answers in tests/data are 12-13 unpunctuated words)."""
    text = response.rstrip()
    words = _words(text)
    if not words or _STRUCTURED_LINE.match(text.splitlines()[-1]):
        return None
    if text.endswith((":", ",", ";", "-", "–", "(")):
        return Flag("cut_off", 1.0, f"the response ends on {text[-1]!r}: {_quote(text[-50:])}")
    if text.endswith(_ENDS):
        return None
    if len(words) >= 3 and words[-1] in _DANGLING:
        return Flag("cut_off", 1.0, f"the response ends on {words[-1]!r}: {_quote(text[-50:])}")
    if len(words) >= s.cut_min_words and _SENTENCE_END.search(text):
        return Flag("cut_off", 1.0, f"the response's last sentence has no end: {_quote(text[-50:])}")
    return None


# --- method-specific ----------------------------------------------------------------------

_DEMO = re.compile(
    r"(?:^|\n)\s*(?:positive\s+)?example\s*\d*\s*[-:–]*\s*\n?\s*input\s*:\s*(?P<input>.+?)\s*\n\s*output\s*:\s*(?P<output>.+?)\s*(?=\n|$)",
    re.IGNORECASE | re.DOTALL,
)


def demonstrations(instruction: str) -> list[tuple[str, str]]:
    """The (input, output) demonstrations of a Super-NI style definition ("Positive Example 1 -
    / Input: ... / Output: ...")."""
    return [(m.group("input").strip(), m.group("output").strip()) for m in _DEMO.finditer(instruction)]


def label_set(outputs: Sequence[str], max_labels: int = 10, max_words: int = 3) -> frozenset[str] | None:
    """The gold outputs as a label set when they are one (few short values that repeat), else None."""
    labels = {_norm(o) for o in outputs}
    if len(labels) <= max_labels and 2 * len(labels) <= len(outputs) and all(len(lb.split()) <= max_words for lb in labels):
        return frozenset(labels)
    return None


def contradicting_demonstrations(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    demos = demonstrations(instruction)
    if not demos:
        return None
    gold: dict[str, set[str]] = {}
    for inp, out in ctx.gold:
        gold.setdefault(_norm(inp), set()).add(_norm(out))
    shown: dict[str, str] = {}
    labels = label_set([o for _, o in ctx.gold])
    for inp, out in demos:
        key, said = _norm(inp), _norm(out)
        if key in shown and shown[key] != said:
            return Flag("contradicting_demonstrations", 1.0,
                        f"the definition shows {_quote(inp)} as {shown[key]!r} and as {said!r}")
        shown[key] = said
        if key in gold and said not in gold[key]:
            return Flag("contradicting_demonstrations", 1.0,
                        f"the definition shows {_quote(inp)} as {said!r}; the collection's gold label is {sorted(gold[key])[0]!r}")
        if labels is not None and said not in labels:
            return Flag("contradicting_demonstrations", 1.0,
                        f"the definition shows the label {said!r}; the task's gold labels are {', '.join(sorted(labels))}")
    return None


def output_in_inputs(instruction: str, response: str, ctx: PairContext, s: QualitySettings) -> Flag | None:
    if ctx.output_field and ctx.output_field in ctx.input_fields:
        return Flag("output_in_inputs", 1.0, f"the output field {ctx.output_field!r} is also an input field (Dynosaur's filter)")
    answer = _norm(response)
    for name, value in ctx.input_values.items():
        if answer and _norm(value) == answer:
            return Flag("output_in_inputs", 1.0, f"the output is the input field {name!r} verbatim: {_quote(value)}")
    return None


Rule = Callable[[str, str, PairContext, QualitySettings], Flag | None]
RULES: tuple[Rule, ...] = (
    empty_response, too_short, too_long, repetition, copies_instruction, copies_example, asks_nothing, refusal,
    cut_off, contradicting_demonstrations, output_in_inputs,
)
RULE_NAMES = tuple(r.__name__ for r in RULES)


def check(instruction: str, response: str, ctx: PairContext = PairContext(), settings: QualitySettings | None = None) -> list[Flag]:
    """Every rule's flag for the pair, in `RULES` order; empty when it passes them all."""
    settings = settings or QualitySettings()
    return [f for rule in RULES if (f := rule(instruction, response, ctx, settings)) is not None]
