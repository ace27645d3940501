"""Tokens/s of a whole demo build on the embedded model, against tokens/s of a plain
concurrent client sending the same requests to the same local server. Run by hand:

    .venv/bin/python benchmarks/bench_embedded_throughput.py [C ...]   # default: 16 64

The build is `glan build --until training_set` on the demo's sources (every method's LLM
levels, no training), in a fresh home, with the server started beforehand so its start is
not counted. Its tokens are the completion tokens its materializations record; its time is
the command's wall time, Python start-up, planning and the non-LLM levels included. The
plain client then replays every request the build sent (read from the build's response
cache) with `openai.AsyncOpenAI` at concurrency C. Prints a table and writes
benchmarks/results/embedded_throughput.json.
"""

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from glan_assets.registry import METHODS  # noqa: E402
from resources import embedded  # noqa: E402
from resources.llm import CACHE_KEY_ONLY  # noqa: E402


def recorded(instance: dg.DagsterInstance, key: str) -> int:
    """The sum of metadata `key` over every materialization of every level."""
    total = 0
    for level in [lv.name for m in METHODS for lv in m.levels]:
        for record in instance.fetch_materializations(dg.AssetKey(level), limit=10_000).records:
            value = record.asset_materialization.metadata.get(key)
            total += int(value.value) if value is not None else 0
    return total


async def replay(base_url: str, model: str, requests: list[dict], concurrency: int) -> tuple[float, int, int]:
    """(seconds, completion tokens, failed requests) for sending every request, `concurrency` at a time."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", timeout=600, max_retries=0)
    sem = asyncio.Semaphore(concurrency)
    tokens = failed = 0

    async def one(body: dict) -> None:
        nonlocal tokens, failed
        async with sem:
            try:
                resp = await client.chat.completions.create(**body, model=model)
                tokens += resp.usage.completion_tokens
            except openai.OpenAIError:
                failed += 1

    start = time.monotonic()
    await asyncio.gather(*(one(b) for b in requests))
    took = time.monotonic() - start
    await client.close()
    return took, tokens, failed


def main() -> None:
    concurrencies = [int(a) for a in sys.argv[1:]] or [16, 64]
    root = Path(tempfile.mkdtemp(prefix="glan-bench-embedded-"))
    (root / "home").mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")  # the demo's pools
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env |= {"DAGSTER_HOME": str(root / "home"), "GLAN_DB": str(root / "glan.duckdb"),
            "GLAN_EMBEDDED_STATE": str(root / "embedded")}
    os.environ["GLAN_EMBEDDED_STATE"] = env["GLAN_EMBEDDED_STATE"]  # the server this process starts is the build's
    server = embedded.ensure_server()
    try:
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "training_set", "--keep-server"],
                       env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        build_s = time.monotonic() - start
        instance = dg.DagsterInstance.from_config(str(root / "home"))
        build_tokens, build_calls = recorded(instance, "completion_tokens"), recorded(instance, "llm_calls")
        with sqlite3.connect(root / "llm_cache.sqlite") as con:
            requests = [json.loads(r) for (r,) in con.execute("SELECT request FROM responses ORDER BY created_at")]
        for body in requests:
            for key in (*CACHE_KEY_ONLY, "model"):  # the cache key's, not the request's
                body.pop(key, None)
        plain = []
        for c in concurrencies:
            took, tokens, failed = asyncio.run(replay(server.base_url, server.model, requests, c))
            plain.append({"concurrency": c, "seconds": round(took, 1), "completion_tokens": tokens,
                          "failed": failed, "tokens_per_s": round(tokens / took, 2)})
    finally:
        embedded.stop_server()
    build_rate = build_tokens / build_s
    best = max(plain, key=lambda p: p["tokens_per_s"])
    result = {
        "measured": time.strftime("%Y-%m-%d"),
        "requests": len(requests),
        "build": {"seconds": round(build_s, 1), "llm_calls": build_calls, "completion_tokens": build_tokens,
                  "tokens_per_s": round(build_rate, 2)},
        "plain_client": plain,
        "ratio_to_best_plain": round(build_rate / best["tokens_per_s"], 3),
    }
    print(f"{'':<22} {'requests':>8} {'seconds':>8} {'tokens':>8} {'tokens/s':>9}")
    print(f"{'glan build':<22} {build_calls:>8} {build_s:>8.1f} {build_tokens:>8} {build_rate:>9.2f}")
    for p in plain:
        print(f"{'plain client, C=' + str(p['concurrency']):<22} {len(requests) - p['failed']:>8} {p['seconds']:>8} "
              f"{p['completion_tokens']:>8} {p['tokens_per_s']:>9}")
    print(f"build / best plain client: {result['ratio_to_best_plain']}")
    out = Path(__file__).parent / "results" / "embedded_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
