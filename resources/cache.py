"""Content-addressed store of LLM responses, kept beside the data.

A response is written the moment it arrives and before it is used, so a rebuild with the
same prompts makes no calls and a killed run repeats only the requests that were in flight.
SQLite in WAL mode lets several step processes read and write it at once, which the
single-writer DuckDB file does not.
"""

import hashlib
import json
import sqlite3
from pathlib import Path


def cache_key(request: dict) -> str:
    """Key on everything that shapes the answer: model, messages, sampling, sample index
    (sha256 of the request as canonical JSON)."""
    payload = json.dumps(request, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        # Each response is committed to the OS before it is used, which survives a killed
        # process; an fsync per response (FULL) halved the requests/s a stage could keep up.
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT NOT NULL,"
            " created_at TEXT DEFAULT CURRENT_TIMESTAMP)"
        )

    def get(self, key: str) -> dict | None:
        row = self._con.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, request: dict, response: dict) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO responses (key, request, response) VALUES (?, ?, ?)",
            (key, json.dumps(request, ensure_ascii=False), json.dumps(response, ensure_ascii=False)),
        )

    def __len__(self) -> int:
        return self._con.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._con.close()
