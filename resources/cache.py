"""Content-addressed store of LLM responses, kept beside the data.

A response is written the moment it arrives and before it is used, so a rebuild with the
same prompts makes no calls and a killed run repeats only the requests that were in flight.
SQLite in WAL mode lets several step processes read and write it at once, which the
single-writer DuckDB file does not.

Each response also records what the plan's estimate reads (`glan_assets.estimate`): the
stage, partition and model it was asked for, its token counts and how long it took.
"""

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

# Columns added after the first release; an older cache gains them (empty) when opened.
MEASURED = {"stage": "TEXT", "partition_key": "TEXT", "model": "TEXT", "prompt_tokens": "INTEGER",
            "completion_tokens": "INTEGER", "latency_s": "REAL"}


@dataclass(frozen=True)
class Measured:
    """Mean token counts of the responses one stage and model got."""

    responses: int
    prompt_tokens: float
    completion_tokens: float


def open_sqlite(path: str | Path, *schema: str) -> sqlite3.Connection:
    """The cache's SQLite file (or a side table's in it), in autocommit and WAL mode, with
    `schema`'s statements run. Several step processes read and write it at once; each write is
    committed to the OS before it is used, which survives a killed process (an fsync per
    response, FULL, halved the requests/s a stage could keep up)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(Path(path), timeout=60, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    for statement in schema:
        con.execute(statement)
    return con


def cache_key(request: dict) -> str:
    """Key on everything that shapes the answer: model, messages, sampling, sample index
    (sha256 of the request as canonical JSON)."""
    payload = json.dumps(request, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._con = open_sqlite(
            self.path,
            "CREATE TABLE IF NOT EXISTS responses ("
            " key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT NOT NULL,"
            " created_at TEXT DEFAULT CURRENT_TIMESTAMP)",
        )
        have = {row[1] for row in self._con.execute("PRAGMA table_info(responses)")}
        for column, kind in MEASURED.items():
            if column not in have:
                try:
                    self._con.execute(f"ALTER TABLE responses ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    def get(self, key: str) -> dict | None:
        row = self._con.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, request: dict, response: dict, measured: dict | None = None) -> None:
        """Store a response; `measured` holds any of the `MEASURED` columns."""
        extra = {k: v for k, v in (measured or {}).items() if k in MEASURED}
        columns = ", ".join(["key", "request", "response", *extra])
        self._con.execute(
            f"INSERT OR REPLACE INTO responses ({columns}) VALUES ({', '.join('?' * (3 + len(extra)))})",
            (key, json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False), *extra.values()),
        )

    def measured(self) -> dict[tuple[str, str], Measured]:
        """(stage, model) -> mean tokens of the responses that recorded them."""
        rows = self._con.execute(
            "SELECT stage, model, count(*), avg(prompt_tokens), avg(completion_tokens) FROM responses"
            " WHERE stage IS NOT NULL AND prompt_tokens IS NOT NULL GROUP BY stage, model"
        )
        return {(stage, model): Measured(n, p, c) for stage, model, n, p, c in rows}

    def cached_calls(self) -> dict[tuple[str, str, str, float, float, int], int]:
        """(stage, partition, model, temperature, top_p, max_tokens) -> responses cached for it."""
        sampling = ", ".join(f"json_extract(request, '$.{f}')" for f in ("temperature", "top_p", "max_tokens"))
        rows = self._con.execute(
            f"SELECT stage, partition_key, model, {sampling}, count(*) FROM responses"
            f" WHERE stage IS NOT NULL AND partition_key IS NOT NULL GROUP BY stage, partition_key, model, {sampling}"
        )
        return {tuple(key): n for *key, n in rows}

    def __len__(self) -> int:
        return self._con.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._con.close()
