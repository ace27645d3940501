"""Does one partition's LLM stage keep an endpoint saturated? Against a latency server that
answers after L with no model, C concurrent requests can reach at most C/L requests/s.

Measures the `answers` level of one discipline partition as Dagster materializes it (cache
writes and the DuckDB commit included), and, in the same run, two plain clients driving the
same server at the same concurrency: a bare `openai` async client, and a bare aiohttp client
(the best plain client on this machine, and the pipeline's own transport). Run by hand:

    .venv/bin/python benchmarks/bench_orchestration.py [REQUESTS]     # default 3000

Prints a table and writes benchmarks/results/orchestration.json.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import dagster as dg
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glan_assets.glan import answers  # noqa: E402
from glan_assets.glan.schemas import QuestionRow  # noqa: E402
from glan_assets.registry import resources_from_env  # noqa: E402
from resources.storage import DuckDBStore, Slice  # noqa: E402

LATENCY_S = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions(n: int) -> list[QuestionRow]:
    return [
        QuestionRow(question_id=f"qst_{i:016x}", session_id="ses_0", discipline="Bench", syllabus_id="syl_0",
                    question_index=i, kind="basic", session_ids=["ses_0"], key_concepts=["a"],
                    question=f"Question number {i}?", model="stub")
        for i in range(n)
    ]


def pipeline(base_url: str, concurrency: int, n: int) -> float:
    """Requests/s of the answers level of one partition, fresh cache, as Dagster runs it."""
    root = Path(tempfile.mkdtemp(prefix="glan-orch-"))
    env = {"GLAN_DB": str(root / "glan.duckdb"), "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "x",
           "GLAN_MAX_CONCURRENCY": str(concurrency)}
    res = resources_from_env(env)
    DuckDBStore(path=env["GLAN_DB"]).replace([Slice(QuestionRow, questions(n), {"discipline": "Bench"})])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("discipline", ["Bench"])
    os.environ.update(env)
    result = dg.materialize([answers.answers], partition_key="Bench", instance=instance, resources=res,
                            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    step = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS)
    seconds = step.event_specific_data.duration_ms / 1000
    assert len(res["store"].read(answers.AnswerRow, "Bench")) == n
    return n / seconds


async def openai_client(base_url: str, concurrency: int, n: int) -> float:
    """Requests/s of a plain `openai` async client at the same concurrency."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await client.chat.completions.create(model="stub", messages=[{"role": "user", "content": f"Q {i}?"}])

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.monotonic() - start
    await client.close()
    return n / seconds


async def aiohttp_client(base_url: str, concurrency: int, n: int) -> float:
    """Requests/s of a plain aiohttp client POSTing the same requests and reading their JSON."""
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> None:
            body = {"model": "stub", "messages": [{"role": "user", "content": f"Q {i}?"}]}
            async with sem, session.post(f"{base_url}/chat/completions", json=body) as resp:
                await resp.json()

        start = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.monotonic() - start)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    port = free_port()
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "latency_server.py"), str(port), str(LATENCY_S)])
    base_url = f"http://127.0.0.1:{port}/v1"
    time.sleep(1.0)
    rows = []
    try:
        for c in (64, 256):
            limit = c / LATENCY_S
            sdk = asyncio.run(openai_client(base_url, c, n))
            best = asyncio.run(aiohttp_client(base_url, c, n))
            ours = pipeline(base_url, c, n)
            rows.append({"concurrency": c, "latency_s": LATENCY_S, "requests": n, "limit_rps": limit,
                         "openai_client_rps": round(sdk, 1), "aiohttp_client_rps": round(best, 1),
                         "pipeline_rps": round(ours, 1), "pipeline_vs_limit": round(ours / limit, 3),
                         "pipeline_vs_aiohttp_client": round(ours / best, 3),
                         "pipeline_vs_openai_client": round(ours / sdk, 3),
                         "aiohttp_client_vs_limit": round(best / limit, 3)})
    finally:
        server.kill()
    print(f"{'C':>4} {'limit C/L':>10} {'openai':>9} {'aiohttp':>9} {'pipeline':>9} {'pipe/limit':>11} "
          f"{'pipe/aiohttp':>13} {'pipe/openai':>12}")
    for r in rows:
        print(f"{r['concurrency']:>4} {r['limit_rps']:>9.0f}/s {r['openai_client_rps']:>7.1f}/s "
              f"{r['aiohttp_client_rps']:>7.1f}/s {r['pipeline_rps']:>7.1f}/s {r['pipeline_vs_limit']:>11.3f} "
              f"{r['pipeline_vs_aiohttp_client']:>13.3f} {r['pipeline_vs_openai_client']:>12.3f}")
    out = Path(__file__).parent / "results" / "orchestration.json"
    out.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores",
                               "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
