"""GLAN instruction-tuning data as Dagster software-defined assets stored in DuckDB."""

import os

# Before anything imports torch, whose OpenMP runtime reads this once. Its threads otherwise
# spin between operations: in the demo build, UIT's perplexity scorer spun ~45 CPU s beside
# the embedded model on 2 cores (the build's own processes used 88-98 CPU s, 45 when
# passive), time the model lost. Waiting passively costs a quiet machine nothing. A value the
# user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
