"""Quality signals over instruction/response pairs, whatever method made them: explainable
rules (`rules`, with each method's `contexts`), instruction-following difficulty under a
small local model (`ifd`), an LLM judge (`judge`, its prompt in `prompts`), and the choice
of the training set by them (`selection`), with their settings (`settings`). Pure functions
and values; the quality level calls them per partition. `calibration` measures them on a
labelled set (benchmarks/bench_quality.py)."""
