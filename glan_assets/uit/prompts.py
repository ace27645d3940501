"""Format transfer: one request rewrites a task's instruction, shown in its source format,
into the target format. The worked examples fix the direction: a FLAN-style and a
PromptSource-style task in, the target format out (the paper's few-shot transfer)."""

from glan_assets.prompting import Prompt

# What the model is shown of a task: see `glan_assets.uit.tasks.source_view`.
_USER = "A task in {source_format} format:\n\n{source}\n\n{ask}"

_FLAN_SOURCE = (
    "Example 1 -\nPremise: The sun is shining.\nHypothesis: It is daytime.\nDoes the premise entail the hypothesis? yes or no\n"
    "Output: yes\n\nExample 2 -\nPremise: The road is dry.\nHypothesis: It rained all morning.\n"
    "Does the premise entail the hypothesis? yes or no\nOutput: no"
)
_PROMPTSOURCE_SOURCE = (
    "Example 1 -\nReview: I loved every minute of it.\nIs this review positive or negative?\nOutput: positive\n\n"
    "Example 2 -\nReview: A dull, overlong mess.\nIs this review positive or negative?\nOutput: negative"
)

_DEFINITION_ASK = (
    "Rewrite it as a definition of the task (what the input is and what the output must be), "
    "followed by two positive examples. Reply with only the rewritten instruction."
)
DEFINITION = Prompt(
    name="uit_definition",
    system="You rewrite the instructions of language tasks into one format: a definition of the task, "
    "then positive examples, as in Super-NaturalInstructions.",
    user=_USER.replace("{ask}", _DEFINITION_ASK),
    examples=(
        (
            _USER.format(source_format="flan", source=_FLAN_SOURCE, ask=_DEFINITION_ASK),
            "Definition: You are given a premise and a hypothesis. Answer \"yes\" if the premise entails the "
            "hypothesis, and \"no\" otherwise.\n\nPositive Example 1 -\nInput: Premise: The sun is shining. "
            "Hypothesis: It is daytime.\nOutput: yes\n\nPositive Example 2 -\nInput: Premise: The road is dry. "
            "Hypothesis: It rained all morning.\nOutput: no",
        ),
        (
            _USER.format(source_format="promptsource", source=_PROMPTSOURCE_SOURCE, ask=_DEFINITION_ASK),
            "Definition: You are given a movie review. Classify its sentiment as \"positive\" or \"negative\".\n\n"
            "Positive Example 1 -\nInput: I loved every minute of it.\nOutput: positive\n\n"
            "Positive Example 2 -\nInput: A dull, overlong mess.\nOutput: negative",
        ),
    ),
)

# The placeholder `{input}` marks where each instance's input goes (doubled for str.format).
_TEMPLATE_ASK = (
    "Rewrite it as a FLAN-style instruction template: one or two plain sentences around the placeholder "
    "{{input}}, which stands for the instance's input. Reply with only the template."
)
TEMPLATE = Prompt(
    name="uit_template",
    system="You rewrite the instructions of language tasks into one format: short FLAN-style templates "
    "with an {input} placeholder.",
    user=_USER.replace("{ask}", _TEMPLATE_ASK),
    examples=(
        (
            _USER.format(source_format="flan", source=_FLAN_SOURCE, ask=_TEMPLATE_ASK),
            "{input}\n\nDoes the premise entail the hypothesis? Answer yes or no.",
        ),
        (
            _USER.format(source_format="promptsource", source=_PROMPTSOURCE_SOURCE, ask=_TEMPLATE_ASK),
            "Here is a movie review: {input}\n\nIs the sentiment of this review positive or negative?",
        ),
    ),
)

TARGETS = {"definition": DEFINITION, "template": TEMPLATE}

# The worked examples' own sentences: a small model often copies a demonstration whole
# (a sentiment definition for a task about capitals), and its loss need not show it.
DEMONSTRATED = (
    "The sun is shining", "It is daytime", "The road is dry", "It rained all morning",
    "I loved every minute of it", "A dull, overlong mess",
)
