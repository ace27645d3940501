"""Quality signals over instruction/response pairs, whatever method made them: explainable
rules (`rules`, with each method's `contexts`), instruction-following difficulty under a
small local model (`ifd`), an LLM judge (`judge`, its prompt in `prompts`), and the choice
of the training set by them (`selection`), with their settings (`settings`). `levels` builds
each method's quality level (`<method>_quality`) from these, and `stored` reads its rows
back for the training set, the release and `glan quality`. `calibration` measures them on a
labelled set (benchmarks/bench_quality.py)."""
