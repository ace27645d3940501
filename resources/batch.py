"""The OpenAI Batch API: a step's cache misses sent as one batch, at the batch price, and
their answers put into the response cache when the batch is done.

A step in batch mode (`GLAN_BATCH`, or `GLAN_<STAGE>_BATCH`) answers what is cached and
collects its misses (`resources.llm`); `submit` then uploads them as a JSONL file through
`/v1/files`, creates a batch through `/v1/batches` and records it here before the step ends.
Nothing waits on it: `poll` (the `llm_batches` sensor, or `glan build`) retrieves each batch
not yet downloaded, and once it has ended (completed, expired, cancelled or failed) puts
every answered line into the cache under the key it was asked with, so the level's next run
finds its answers cached and gives the rows an online build would. A line that failed is
recorded with its reason: a retryable one (expired, cancelled, 429, 5xx) goes again in the
next batch, up to `max_retries` times; any other is the request's error, which the stage
turns into a reject.

A batch is keyed by level, partition and the set of request keys it carries: a step that
finds its misses already in a batch not yet ended re-attaches to it instead of paying twice.
The set's hash is in the batch's metadata too, so a batch created by a step killed before it
recorded it is found through `batches.list` and recorded then.
The records live beside the response cache, in its SQLite file, which every step process and
the sensor write at once (DuckDB allows one writer, which the steps writing rows hold).

The JSONL's lines are `{"custom_id", "method", "url", "body"}`, as OpenAI's and vLLM's
`run-batch` read them; the custom id is the request's cache key.
"""

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import openai

from resources.budget import Spend, SpendLedger
from resources.cache import ResponseCache, open_sqlite
from resources.redact import redact

URL = "/v1/chat/completions"
WINDOW = "24h"  # the only completion window OpenAI offers
ENDED = ("completed", "expired", "cancelled", "failed")
# OpenAI's limits on one batch: 50,000 requests and a 200 MB file (with room for the multipart).
MAX_REQUESTS = 50_000
MAX_BYTES = 190_000_000
# A failed line with one of these goes again in the next batch; any other is its request's error.
RETRYABLE = {"batch_expired", "batch_cancelled", "batch_failed", "rate_limit_exceeded", "server_error", "timeout"}


class BatchPending(Exception):
    """The step's misses are in batches that have not ended: the level is built once they have."""

    def __init__(self, batch_ids: list[str], requests: int, attached: bool):
        how = "waiting on" if attached else "sent as"
        super().__init__(f"{requests} LLM requests {how} {', '.join(batch_ids)}; the level is built once they have ended")
        self.batch_ids, self.requests, self.attached = batch_ids, requests, attached


@dataclass(frozen=True)
class Pending:
    """A cache miss collected for a batch."""

    key: str
    request: dict  # as cached: with the fields that only key the cache
    sent: dict  # as sent
    stage: str
    prompt_price: float  # USD per million tokens, the batch price
    completion_price: float


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    level: str
    partition_key: str | None
    stages: str
    requests: int
    status: str
    completed: int
    failed: int
    downloaded: bool
    error: str
    created_at: float
    updated_at: float
    run_id: str  # the run that sent it, and its build: the spend is theirs
    build_id: str

    @property
    def ended(self) -> bool:
        return self.status in ENDED


@dataclass(frozen=True)
class LineFailure:
    code: str
    message: str
    times: int  # in how many batches the request failed

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


def request_set(keys: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()


def line(p: Pending) -> bytes:
    """A request as the batch's input file holds it."""
    return json.dumps({"custom_id": p.key, "method": "POST", "url": URL, "body": p.sent}, ensure_ascii=False).encode() + b"\n"


def chunks(pending: Iterable[Pending]) -> list[list[Pending]]:
    """The requests, once each and in key order, cut into batches within the API's limits; the
    same requests always cut the same way, so a step asking again finds its batches."""
    unique = sorted({p.key: p for p in pending}.values(), key=lambda p: p.key)
    cut: list[list[Pending]] = []
    size = 0
    for p in unique:
        n = len(line(p))
        if not cut or len(cut[-1]) >= MAX_REQUESTS or size + n > MAX_BYTES:
            cut.append([])
            size = 0
        cut[-1].append(p)
        size += n
    return cut


_COLUMNS = ("batch_id", "level", "partition_key", "stages", "requests", "status", "completed", "failed",
            "downloaded", "error", "created_at", "updated_at", "run_id", "build_id")


class BatchBook:
    """The batches sent, their requests, and the lines that failed, in the cache's SQLite file."""

    def __init__(self, path: str | Path):
        self._con = open_sqlite(
            path,
            "CREATE TABLE IF NOT EXISTS llm_batches (batch_id TEXT PRIMARY KEY, level TEXT NOT NULL,"
            " partition_key TEXT, stages TEXT NOT NULL, requests INTEGER NOT NULL, status TEXT NOT NULL,"
            " completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,"
            " downloaded INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
            " created_at REAL NOT NULL, updated_at REAL NOT NULL, request_set TEXT NOT NULL,"
            " run_id TEXT NOT NULL, build_id TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS llm_batch_requests (batch_id TEXT NOT NULL, key TEXT NOT NULL,"
            " stage TEXT NOT NULL, request TEXT NOT NULL, prompt_price REAL NOT NULL, completion_price REAL NOT NULL,"
            " PRIMARY KEY (batch_id, key))",
            "CREATE TABLE IF NOT EXISTS llm_batch_failures (key TEXT NOT NULL, batch_id TEXT NOT NULL,"
            " code TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (key, batch_id))",
        )

    def open_batch(self, level: str, partition_key: str | None, keys: Iterable[str]) -> BatchRecord | None:
        """The batch not yet downloaded that carries exactly these requests for the level's partition."""
        row = self._con.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM llm_batches WHERE level = ? AND partition_key IS ? AND request_set = ?"
            " ORDER BY created_at DESC LIMIT 1",
            (level, partition_key, request_set(keys)),
        ).fetchone()
        return BatchRecord(*row) if row else None

    def record(self, batch_id: str, level: str, partition_key: str | None, pending: list[Pending], status: str,
               run_id: str, build_id: str) -> None:
        now = time.time()
        stages = ",".join(dict.fromkeys(p.stage for p in pending))
        unique = {p.key: p for p in pending}
        self._con.execute("BEGIN")
        self._con.execute(
            "INSERT INTO llm_batches (batch_id, level, partition_key, stages, requests, status, created_at, updated_at,"
            " request_set, run_id, build_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (batch_id, level, partition_key, stages, len(unique), status, now, now, request_set(unique), run_id, build_id),
        )
        self._con.executemany(
            "INSERT INTO llm_batch_requests VALUES (?, ?, ?, ?, ?, ?)",
            [(batch_id, p.key, p.stage, json.dumps(p.request, ensure_ascii=False), p.prompt_price, p.completion_price)
             for p in unique.values()],
        )
        self._con.execute("COMMIT")

    def batches(self, *, downloaded: bool | None = None) -> list[BatchRecord]:
        where = "" if downloaded is None else f" WHERE downloaded = {int(downloaded)}"
        rows = self._con.execute(f"SELECT {', '.join(_COLUMNS)} FROM llm_batches{where} ORDER BY created_at")
        return [BatchRecord(*row) for row in rows]

    def has(self, batch_id: str) -> bool:
        return self._con.execute("SELECT 1 FROM llm_batches WHERE batch_id = ?", (batch_id,)).fetchone() is not None

    def get(self, batch_id: str) -> BatchRecord:
        row = self._con.execute(f"SELECT {', '.join(_COLUMNS)} FROM llm_batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return BatchRecord(*row)

    def update(self, batch_id: str, status: str, completed: int, failed: int, error: str = "") -> None:
        self._con.execute(
            "UPDATE llm_batches SET status = ?, completed = ?, failed = ?, error = ?, updated_at = ? WHERE batch_id = ?",
            (status, completed, failed, error, time.time(), batch_id),
        )

    def failure(self, key: str) -> LineFailure | None:
        """How the request's line failed in its latest batch, and in how many batches it did."""
        row = self._con.execute(
            "SELECT f.code, f.message, (SELECT count(*) FROM llm_batch_failures WHERE key = f.key)"
            " FROM llm_batch_failures f JOIN llm_batches b USING (batch_id) WHERE f.key = ?"
            " ORDER BY b.created_at DESC LIMIT 1",
            (key,),
        ).fetchone()
        return LineFailure(*row) if row else None

    def requests(self, batch_id: str) -> dict[str, tuple[str, dict, float, float]]:
        rows = self._con.execute(
            "SELECT key, stage, request, prompt_price, completion_price FROM llm_batch_requests WHERE batch_id = ?",
            (batch_id,),
        )
        return {key: (stage, json.loads(request), pp, cp) for key, stage, request, pp, cp in rows}

    def downloaded(self, batch_id: str, failures: list[tuple[str, str, str]]) -> None:
        """Mark the batch downloaded, with its failed lines (key, code, message), at once."""
        self._con.execute("BEGIN")
        self._con.executemany("INSERT OR REPLACE INTO llm_batch_failures VALUES (?, ?, ?, ?)",
                              [(key, batch_id, code, message) for key, code, message in failures])
        self._con.execute("UPDATE llm_batches SET downloaded = 1, updated_at = ? WHERE batch_id = ?", (time.time(), batch_id))
        self._con.execute("COMMIT")

    def close(self) -> None:
        self._con.close()


def in_flight(cache_path: str | Path) -> list[BatchRecord]:
    """The batches not yet downloaded, oldest first (none where there is no cache yet)."""
    if not Path(cache_path).exists():
        return []
    book = BatchBook(cache_path)
    try:
        return book.batches(downloaded=False)
    finally:
        book.close()


def client(base_url: str, api_key: str, timeout_s: float, max_retries: int) -> openai.OpenAI:
    """The SDK's client: a batch is a handful of calls, where its typed file and batch models
    and its own retries are worth more than the speed aiohttp gives the online path."""
    return openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=max_retries)


def submit(api: openai.OpenAI, book: BatchBook, level: str, partition_key: str | None, pending: list[Pending],
           run_id: str, build_id: str) -> BatchPending:
    """Send the misses as batches, re-attaching to those that already carry a part of them."""
    ids, attached = [], 0
    for part in chunks(pending):
        keys = request_set(p.key for p in part)
        had = book.open_batch(level, partition_key, [p.key for p in part])
        if had is not None and not had.downloaded:
            ids.append(had.batch_id)
            attached += 1
            continue
        try:
            if (found := _sent_unrecorded(api, book, keys)) is not None:  # by a step killed before it recorded it
                book.record(found.id, level, partition_key, part, found.status, run_id, build_id)
                ids.append(found.id)
                attached += 1
                continue
            uploaded = api.files.create(
                file=(f"{level}.jsonl", b"".join(line(p) for p in part), "application/jsonl"), purpose="batch"
            )
            batch = api.batches.create(
                input_file_id=uploaded.id, endpoint=URL, completion_window=WINDOW,
                metadata={"glan_level": level, "glan_partition": (partition_key or "")[:500], "glan_requests": keys},
            )
        except openai.OpenAIError as exc:
            raise RuntimeError(redact(f"the Batch API did not take the batch for {level}: {exc}")) from None
        book.record(batch.id, level, partition_key, part, batch.status, run_id, build_id)
        ids.append(batch.id)
    return BatchPending(ids, len({p.key for p in pending}), attached=attached == len(ids))


def _sent_unrecorded(api: openai.OpenAI, book: BatchBook, keys: str):
    """A batch not yet ended that carries these requests (its metadata says) but is not
    recorded: among the latest 100, where one created a moment before a kill would be."""
    for batch in api.batches.list(limit=100).data:
        if (batch.metadata or {}).get("glan_requests") == keys and batch.status not in ENDED and not book.has(batch.id):
            return batch
    return None


def _counts(batch) -> tuple[int, int]:
    counts = batch.request_counts
    return (counts.completed, counts.failed) if counts else (0, 0)


def poll(api: openai.OpenAI, cache_path: str | Path) -> list[BatchRecord]:
    """Retrieve every batch not yet downloaded; download those that have ended into the
    cache. Returns the batches polled, as they now stand."""
    book = BatchBook(cache_path)
    try:
        polled = []
        for record in book.batches(downloaded=False):
            try:
                batch = api.batches.retrieve(record.batch_id)
            except openai.OpenAIError as exc:
                book.update(record.batch_id, record.status, record.completed, record.failed,
                            redact(f"could not retrieve it: {exc}"))
                polled.append(book.get(record.batch_id))
                continue
            completed, failed = _counts(batch)
            error = "; ".join(f"{e.code}: {e.message}" for e in (batch.errors.data or [])) if batch.errors else ""
            book.update(record.batch_id, batch.status, completed, failed, redact(error))
            if batch.status in ENDED:
                _download(api, book, cache_path, record.batch_id, batch)
            polled.append(book.get(record.batch_id))
        return polled
    finally:
        book.close()


def _lines(api: openai.OpenAI, file_id: str | None) -> list[dict]:
    if not file_id:
        return []
    return [json.loads(line) for line in api.files.content(file_id).text.splitlines() if line.strip()]


def _download(api: openai.OpenAI, book: BatchBook, cache_path: str | Path, batch_id: str, batch) -> None:
    """Every answered line into the cache, priced into the submitting run's spend; every
    other request of the batch recorded as failed, with why."""
    asked = book.requests(batch_id)
    cache, ledger = ResponseCache(cache_path), SpendLedger(cache_path)
    spend, answered, failures = Spend(), set(), []
    record = book.get(batch_id)
    try:
        for line in _lines(api, batch.output_file_id) + _lines(api, batch.error_file_id):
            key = line.get("custom_id")
            if key not in asked or key in answered:
                continue
            stage, request, prompt_price, completion_price = asked[key]
            response = line.get("response") or {}
            body = response.get("body") or {}
            status = response.get("status_code")
            if status == 200 and not line.get("error") and isinstance(body, dict) and body.get("choices"):
                choice = body["choices"][0]
                usage = body.get("usage") or {}
                prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
                cache.put(
                    key, request,
                    {"text": redact((choice.get("message") or {}).get("content") or ""),
                     "finish_reason": choice.get("finish_reason") or "stop"},
                    {"stage": stage or None, "partition_key": record.partition_key, "model": request["model"],
                     "prompt_tokens": prompt, "completion_tokens": completion},
                )
                spend += Spend(1, prompt, completion, (prompt * prompt_price + completion * completion_price) / 1e6)
                answered.add(key)
                continue
            error = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
            code = error.get("code") or (_code_of(status) if status else "unknown")
            failures.append((key, str(code), redact(str(error.get("message") or f"HTTP {status}"))))
        failed = {key for key, _, _ in failures}
        # A line neither answered nor in the error file (a batch refused as a whole) goes again.
        why = record.error or f"not answered: the batch {batch.status}"
        failures += [(key, f"batch_{batch.status}", why) for key in asked if key not in answered and key not in failed]
        if spend.calls:  # the submitting build's spend, in a row of the batch's own
            ledger.add(f"batch:{batch_id}", record.build_id or record.run_id, spend)
        book.downloaded(batch_id, failures)
    finally:
        cache.close()
        ledger.close()


def _code_of(status: int) -> str:
    """A failed line's HTTP status as an error code: 429 and 5xx are worth sending again."""
    if status == 429:
        return "rate_limit_exceeded"
    return "server_error" if status >= 500 else f"http_{status}"
