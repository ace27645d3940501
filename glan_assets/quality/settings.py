"""The quality signals' settings as a typed resource; `glan_assets.settings` fills it from
the environment (`GLAN_<FIELD>`), and the launchpad can override any field.

The rules' thresholds flag what no one would train on; the selection's thresholds are where
a user steers. Each default says why it is what it is.
"""

from typing import Annotated

import dagster as dg

from resources.local_models import DEFAULT_MODEL_CACHE
from resources.versioning import ReadBy, Unversioned

# Who reads what: the rules, the judge and the scorer are the quality levels'; the
# selection is the training set's, so a changed threshold re-selects without re-scoring.
SCORED = ReadBy("glan_quality", "uit_quality", "dynosaur_quality")
SELECTED = ReadBy("training_set")


class QualitySettings(dg.ConfigurableResource):
    # --- rules (glan_assets.quality.rules) ---
    # An instruction that asks to explain, describe, compare, prove... is not answered in
    # fewer words than this. Far below the shortest good explanation in the calibration set
    # (45 words), so only replies that cannot explain anything are flagged ("It cools.");
    # a one-sentence explanation of 15 words passes.
    min_explained_words: Annotated[int, SCORED] = 10
    # An instruction that names its answers ("Answers must be one of: ...", "yes or no") wants
    # a label; a reply of more words than this is not one. Dynosaur lists labels of at most
    # 40 characters (`dynosaur.instances.LABEL_CHARS`), a handful of words.
    max_label_words: Annotated[int, SCORED] = 10
    # Longer than any answer the paper's stages ask for (GLAN answers: 1,024 tokens, about 750
    # words); past this a reply is a runaway, whatever its instruction.
    max_response_words: Annotated[int, SCORED] = 2000
    # Gopher's repetition filter (Rae et al., 2021, table A1): a text whose words in repeated
    # 5-grams hold more than 15% of its characters is dropped.
    max_repeated_ngram_share: Annotated[float, SCORED] = 0.15
    # ... and one whose lines (3 or more) repeat each other more than this share (Gopher: 0.3).
    max_repeated_line_share: Annotated[float, SCORED] = 0.3
    # A reply made mostly (this share of its words) of 4-grams of its instruction, covering
    # at least this share of the instruction, restates the instruction instead of answering.
    # Both: an extractive answer copies a span of a long passage (a small share of it), and a
    # good answer may open by restating a short question (a small share of the answer).
    max_instruction_copy_share: Annotated[float, SCORED] = 0.5
    # A reply of at least this many words whose earlier sentences end in punctuation and whose
    # last does not was cut off. Shorter replies (labels, names) end without it by design.
    cut_min_words: Annotated[int, SCORED] = 12

    # --- selection (glan_assets.quality.selection) ---
    # IFD above 1 means the instruction makes the response harder to predict, not easier: the
    # pair is mismatched. Li et al. (NAACL 2024) drop those before choosing by IFD.
    ifd_max: Annotated[float, SELECTED] = 1.0
    ifd_min: Annotated[float, SELECTED] = 0.0  # no floor by default: a low IFD is an easy pair, not a broken one
    # Per source, the share of pairs that pass every other threshold kept, highest IFD first.
    # 1.0 keeps them all; the paper's choice is 0.05-0.10 of a large pool, which a demo's
    # few dozen pairs are not.
    ifd_top_fraction: Annotated[float, SELECTED] = 1.0
    # The judge's 1-10 score (MT-Bench style) a pair must reach. 1: no floor. The default judge
    # of a fresh clone is the embedded SmolLM2-135M, and it is no better than chance on the
    # calibration set (AUC 0.46, 95% interval 0.35-0.58; benchmarks/results/quality.json): it
    # scores 1 or 10 whatever the pair, so a floor of 4 dropped 18 of the 41 good pairs it judged.
    # With a real judge endpoint, 4 drops what the rubric calls "fails the request" (1-3).
    judge_min: Annotated[int, SELECTED] = 1
    # A pair whose judge reply was unusable (it is in the rejects table) has no score; by
    # default it is not released, so every judged pair released carries its score.
    keep_unjudged: Annotated[bool, SELECTED] = False
    # A pair any rule flags is dropped; off, the flags are only recorded (and released).
    drop_flagged: Annotated[bool, SELECTED] = True

    # --- the judge (glan_assets.quality.judge) ---
    # The share of each partition's pairs the judge scores, a stable sample by pair id (so a
    # new partition leaves the others' samples alone). The demo profile judges a quarter:
    # the embedded model judges 0.25 pairs/s on 2 cores (benchmarks/results/quality.json).
    judge_sample: Annotated[float, SCORED] = 1.0
    # The judge's own endpoint (`GLAN_JUDGE_BASE_URL`, `GLAN_JUDGE_API_KEY`); empty: the generator's.
    judge_base_url: Annotated[str, SCORED] = ""
    judge_api_key: Annotated[str, Unversioned("a secret, and where the judge is, not what it says")] = ""

    # --- the IFD scorer (resources.scorer) ---
    scorer_model: Annotated[str, SCORED] = "smollm2-135m-instruct"  # a packaged model's name, or a causal LM's directory
    scorer_batch_size: Annotated[int, Unversioned("batching does not change the scores")] = 8
    # GLAN_MODEL_CACHE: where the packaged models' converted copies are kept.
    model_cache: Annotated[str, Unversioned("where converted models are kept, not which")] = str(DEFAULT_MODEL_CACHE)
