"""UIT (Liang et al., 2023): instruction collections in any common format -> one target format.

instructions_raw (every instance as its collection states it) -> uit_candidates (K rewrites
of each task's instruction, scored by a local LM) -> instructions_unified (the instances under
their task's lowest-loss instruction). Each registered collection is a partition.

Declared in `method.py`.
"""
