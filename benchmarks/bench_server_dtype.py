"""Tokens/s of the embedded server by the dtype it computes in, at 1 to 32 requests at once.
Run by hand, on an idle machine:

    .venv/bin/python benchmarks/bench_server_dtype.py [float32 bfloat16 ...]

Starts the server as glan does (`resources.embedded.serve_command`, only the dtype differs)
for each dtype in turn, warms it up, then for each concurrency C sends C requests at once, each
asking for a long text with max tokens 128, and counts completion tokens over wall time. A
demo build keeps 2-8 requests in flight most of the time (its levels wait on each other), so
the low end of the table is where its time goes. Prints a table and writes
benchmarks/results/server_dtype.json.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from resources import embedded  # noqa: E402
from resources.local_models import local_model_dir  # noqa: E402

CONCURRENCY = [1, 2, 4, 8, 16, 32]
MAX_TOKENS = 128


async def burst(base_url: str, model: str, n: int) -> tuple[float, int]:
    """(seconds, completion tokens) for `n` requests sent at once."""
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Write a long essay on the history of bridge number {i}."}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0.7,
            }
            async with session.post(f"{base_url}/chat/completions", json=body) as resp:
                resp.raise_for_status()
                return (await resp.json())["usage"]["completion_tokens"]

        start = time.monotonic()
        tokens = await asyncio.gather(*(one(i) for i in range(n)))
        return time.monotonic() - start, sum(tokens)


def measure(dtype: str, model: str) -> list[dict]:
    port = embedded._free_port()
    root_url = f"http://127.0.0.1:{port}"
    state = Path(tempfile.mkdtemp(prefix="glan-bench-dtype-"))
    env = embedded._server_env(state)
    with open(state / "server.log", "wb") as log:
        server = subprocess.Popen(embedded.serve_command(model, port, dtype), stdout=log, stderr=subprocess.STDOUT,
                                  env=env, cwd=state, start_new_session=True)
    try:
        while not embedded._healthy(root_url, timeout_s=2):
            if server.poll() is not None:
                raise SystemExit(f"the server exited; see {state / 'server.log'}")
            time.sleep(0.5)
        embedded._warm_up(root_url, model, 300)
        rows = []
        for c in CONCURRENCY:
            seconds, tokens = asyncio.run(burst(f"{root_url}/v1", model, c))
            rows.append({"dtype": dtype, "concurrency": c, "seconds": round(seconds, 1), "completion_tokens": tokens,
                         "tokens_per_s": round(tokens / seconds, 1)})
            print(f"{dtype:<9} C={c:<3} {seconds:6.1f} s {tokens:6d} tokens {tokens / seconds:7.1f} tokens/s", flush=True)
        return rows
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def main() -> None:
    dtypes = sys.argv[1:] or ["float32", "bfloat16"]
    model = str(local_model_dir(embedded.DEFAULT_MODEL).resolve())
    rows = [row for dtype in dtypes for row in measure(dtype, model)]
    by = {(r["dtype"], r["concurrency"]): r["tokens_per_s"] for r in rows}
    print(f"\n{'C':>3} " + " ".join(f"{d:>10}" for d in dtypes) + (f" {'ratio':>7}" if len(dtypes) == 2 else ""))
    for c in CONCURRENCY:
        line = f"{c:>3} " + " ".join(f"{by[(d, c)]:>10}" for d in dtypes)
        if len(dtypes) == 2:
            line += f" {by[(dtypes[1], c)] / by[(dtypes[0], c)]:>7.2f}"
        print(line)
    out = ROOT / "benchmarks" / "results" / "server_dtype.json"
    out.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d"), "max_tokens": MAX_TOKENS, "runs": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
