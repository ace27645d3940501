"""What LLM calls cost, per run and per build, and the budget that stops a build's calls.

Every answered call adds its tokens, cost and latency to its run's row of the `spend` table,
in the response cache's SQLite file, which all the step processes of a build write at once
(WAL; each add is one atomic UPDATE, so no process's count is lost to another's). With a
budget (`GLAN_BUDGET_USD`) each add is written at once, and before a cache miss is sent the
spend of the whole build, over all its runs, is read back: at or over the budget the call is
not sent. Calls already in flight then still finish and are cached, so a build can pass its
budget by at most what those cost. Without a budget a session writes its sums once, at its end.
"""

import time
from dataclasses import dataclass, fields
from pathlib import Path

from resources.cache import open_sqlite

# The tag every run of one `glan build` carries, with the build's id: the budget's scope.
BUILD_TAG = "glan/build"


class BudgetExhausted(RuntimeError):
    """The build has spent its budget: the call was not sent."""


@dataclass
class Spend:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0  # summed over the calls

    def __add__(self, other: "Spend") -> "Spend":
        return Spend(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


_COLUMNS = [f.name for f in fields(Spend)]


class SpendLedger:
    def __init__(self, path: str | Path):
        self._con = open_sqlite(
            path,
            "CREATE TABLE IF NOT EXISTS spend (run_id TEXT PRIMARY KEY, build_id TEXT NOT NULL,"
            " calls INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
            " cost_usd REAL NOT NULL, latency_s REAL NOT NULL, updated_at REAL NOT NULL)",
            "CREATE INDEX IF NOT EXISTS spend_build ON spend (build_id)",
        )

    def add(self, run_id: str, build_id: str, spend: Spend) -> None:
        values = [getattr(spend, c) for c in _COLUMNS]
        self._con.execute(
            f"INSERT INTO spend (run_id, build_id, {', '.join(_COLUMNS)}, updated_at)"
            f" VALUES (?, ?, {', '.join('?' * len(_COLUMNS))}, ?) ON CONFLICT (run_id) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in _COLUMNS)
            + ", updated_at = excluded.updated_at",
            (run_id, build_id, *values, time.time()),
        )

    def spent(self, build_id: str) -> float:
        """USD the build has spent, over all its runs."""
        return self._con.execute("SELECT coalesce(sum(cost_usd), 0) FROM spend WHERE build_id = ?", (build_id,)).fetchone()[0]

    def runs(self, build_id: str) -> dict[str, Spend]:
        rows = self._con.execute(f"SELECT run_id, {', '.join(_COLUMNS)} FROM spend WHERE build_id = ?", (build_id,))
        return {run_id: Spend(*values) for run_id, *values in rows}

    def total(self) -> Spend:
        row = self._con.execute(f"SELECT {', '.join(f'coalesce(sum({c}), 0)' for c in _COLUMNS)} FROM spend").fetchone()
        return Spend(*row)

    def last_latency(self) -> tuple[float, int] | None:
        """Mean seconds per call of the last build that sent any, and its calls; None if none did."""
        # A batch's calls (`resources.batch`, in rows `batch:<id>`) took no latency of their own.
        online = "calls > 0 AND run_id NOT LIKE 'batch:%'"
        row = self._con.execute(
            f"SELECT sum(latency_s), sum(calls) FROM spend WHERE {online} AND build_id ="
            f" (SELECT build_id FROM spend WHERE {online} ORDER BY updated_at DESC LIMIT 1)"
        ).fetchone()
        return (row[0] / row[1], row[1]) if row and row[1] else None

    def close(self) -> None:
        self._con.close()


def spend_line(path: str | Path, build_id: str) -> str:
    """What the build spent, over its runs, and what every build has spent with this cache."""
    if not Path(path).exists():
        return "no LLM calls"
    ledger = SpendLedger(path)
    try:
        runs, total = ledger.runs(build_id), ledger.total()
    finally:
        ledger.close()
    mine = sum(runs.values(), Spend())
    batches = sum(run.startswith("batch:") for run in runs)  # a batch's calls, in a row of its own
    over = f"{len(runs) - batches} run(s)" + (f" and {batches} batch(es)" if batches else "")
    return (f"${mine.cost_usd:.4f} for {mine.calls:,} LLM calls over {over} in this build; "
            f"${total.cost_usd:.4f} for {total.calls:,} calls in all builds with this cache")
