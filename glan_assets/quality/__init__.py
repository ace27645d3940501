"""Quality signals over instruction/response pairs, whatever method made them: explainable
rules (`rules`), instruction-following difficulty under a small local model (`ifd`), an LLM
judge (`judge`), and the choice of the training set by them (`selection`). Pure functions
and values; the quality level calls them per partition."""
