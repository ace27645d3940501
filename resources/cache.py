"""Content-addressed store of LLM responses, kept beside the data.

A response is written the moment it arrives and before it is used, so a rebuild with the
same prompts makes no calls and a killed run repeats only the requests that were in flight.
SQLite in WAL mode lets several step processes read and write it at once, which the
single-writer DuckDB file does not.
"""

import json
import sqlite3
from pathlib import Path

from glan_assets.ids import content_hash


def cache_key(request: dict) -> str:
    """Key on everything that shapes the answer: model, messages, sampling, sample index."""
    return content_hash(request)


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
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
