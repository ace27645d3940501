"""Tokens/s of a whole demo build on the embedded model, against tokens/s of a plain
concurrent client sending the same requests to the same local server. Run by hand:

    .venv/bin/python benchmarks/bench_embedded_throughput.py [C ...]   # default: 64

The build is `glan build --until training_set` on the demo's sources (every method's LLM
levels, no training), in a fresh home, with the server started beforehand so its start is
not counted. Its tokens are the completion tokens its materializations record; its time is
the command's wall time, Python start-up, planning and the non-LLM levels included.

The plain client (`openai.AsyncOpenAI`) then replays every request the build sent, read
from the build's response cache. A replay samples anew, and a free-text reply is as long as
its sample: replayed so, the replays' tokens differed from the build's by up to 10%, and once
the client in dependency order beat the one with every request at once, which only other
draws on the build's longest chain allow. So each free-text request is replayed at
the length the build got (`min_tokens` = `max_tokens` = the build's reply in tokens, which
the embedded server honours); structured requests, mostly greedy, are sent as they were, and
the schema decides their end. Two ways:
- all at once, C at a time: no request waits for another, which the build cannot do (a
  question needs its syllabus), so this is the server's ceiling for these requests;
- in the build's dependency order, as a hand-written script would: per method, one stage
  after another (each re-ask after the attempt it follows), each stage's requests all at
  once, the methods side by side. The build's schedule is finer (a partition does not wait
  for the others'), so the order gives this client no advantage over the build.
On 2 cores the build's own processes and the server share the CPU, so each phase also
reports the CPU seconds the server's process group used and the rest of the machine used.
Prints a table and writes benchmarks/results/embedded_throughput.json.
"""

import asyncio
import json
import os
import re
import shutil
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import openai
import transformers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from glan_assets.prompting import Prompt  # noqa: E402
from glan_assets.registry import METHODS  # noqa: E402
from resources import embedded  # noqa: E402
from resources.llm import CACHE_KEY_ONLY  # noqa: E402


class CPU:
    """CPU seconds used between `start()` and `stop()`: by the server's process group, and by
    everything else on the machine (the build's processes, or the plain client)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, server_pgid: int):
        self.pgid = server_pgid

    def _server(self) -> float:
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited while being read
                continue
            if int(fields[2]) == self.pgid:  # pgrp; then utime and stime are fields 11 and 12
                ticks += int(fields[11]) + int(fields[12])
        return ticks / self.TICK

    @classmethod
    def _machine(cls) -> float:
        user, nice, system, idle, iowait, *rest = map(int, Path("/proc/stat").read_text().split()[1:9])
        return (user + nice + system + sum(rest)) / cls.TICK

    def start(self) -> None:
        self.began = (self._server(), self._machine())

    def stop(self) -> dict:
        server, machine = self._server() - self.began[0], self._machine() - self.began[1]
        return {"server_cpu_s": round(server, 1), "other_cpu_s": round(machine - server, 1)}


def recorded(instance: dg.DagsterInstance, key: str) -> int:
    """The sum of metadata `key` over every materialization of every level."""
    total = 0
    for level in [lv.name for m in METHODS for lv in m.levels]:
        for record in instance.fetch_materializations(dg.AssetKey(level), limit=10_000).records:
            value = record.asset_materialization.metadata.get(key)
            total += int(value.value) if value is not None else 0
    return total


def template(text: str) -> str:
    """A regex for a prompt's text with any values in its fields."""
    return "".join(re.escape(literal) + (".*" if field is not None else "")
                   for literal, field, _, _ in string.Formatter().parse(text))


def asked_first(prompt: Prompt, messages: list[dict]) -> bool | None:
    """Whether `messages` are the prompt's first ask (True) or a re-ask (False: without the
    worked examples, or with a reply to correct); None when they are not the prompt's."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not re.fullmatch(template(prompt.system), messages[0]["content"], re.S):
        return None
    if not any(re.match(template(prompt.user), u, re.S) for u in users):
        return None
    return len(messages) == 2 + 2 * len(prompt.examples)


def waves(requests: list[dict], replies: list[str]) -> list[list[list[dict]]]:
    """Per method, its requests in dependency order: one list per (stage, attempt). A re-ask
    waits for the attempt before it: a free-text one carries its number (`resample`), a
    structured one the reply it corrects (`replies[i]` answered `requests[i]`)."""
    asked_by = {text: body for body, text in zip(requests, replies)}

    def attempt(body: dict, first: bool) -> int:
        if body.get("resample"):
            return body["resample"] + 1
        if first:
            return 1
        corrected = body["messages"][-2]
        before = asked_by.get(corrected["content"]) if corrected["role"] == "assistant" else None
        # Asked again without the worked examples, or a reply that was not cached: at least a second ask.
        return 2 if before is None or before is body else 1 + attempt(before, before["messages"] == body["messages"][:-2])

    found, placed = [], 0
    for method in METHODS:
        stages = [s for lv in method.levels for s in lv.stages]
        steps: dict[tuple[int, int], list[dict]] = {}
        for body in requests:
            for i, stage in enumerate(stages):
                first = next((f for p in stage.prompts if (f := asked_first(p, body["messages"])) is not None), None)
                if first is not None:
                    steps.setdefault((i, attempt(body, first)), []).append(body)
                    placed += 1
                    break
        found.append([steps[k] for k in sorted(steps)])
    if placed != len(requests):
        raise SystemExit(f"{len(requests) - placed} of {len(requests)} requests match no stage's prompts")
    return found


async def replay(base_url: str, model: str, requests: list[dict], concurrency: int,
                 ordered: list[list[list[dict]]] | None = None) -> tuple[float, int, int]:
    """(seconds, completion tokens, failed requests) for sending every request, `concurrency`
    at a time; with `ordered` (the requests' `waves`), in that order."""
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

    async def in_order(steps: list[list[dict]]) -> None:
        for step in steps:
            await asyncio.gather(*(one(b) for b in step))

    start = time.monotonic()
    if ordered:
        await asyncio.gather(*(in_order(steps) for steps in ordered))
    else:
        await asyncio.gather(*(one(b) for b in requests))
    took = time.monotonic() - start
    await client.close()
    return took, tokens, failed


def at_build_lengths(requests: list[dict], responses: list[dict], tokenizer) -> None:
    """Fix each free-text request's length to the build's reply: all of `max_tokens` when it
    was cut off there, else its text's tokens and the end-of-sequence token."""
    for body, response in zip(requests, responses):
        if "response_format" in body:
            continue
        if response.get("finish_reason") != "length":
            body["max_tokens"] = len(tokenizer(response["text"], add_special_tokens=False).input_ids) + 1
        body["extra_body"] = {"min_tokens": body["max_tokens"]}  # not an argument of the SDK's own


def main() -> None:
    concurrencies = [int(a) for a in sys.argv[1:]] or [64]
    root = Path(tempfile.mkdtemp(prefix="glan-bench-embedded-"))
    (root / "home").mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")  # the demo's pools
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env |= {"DAGSTER_HOME": str(root / "home"), "GLAN_DB": str(root / "glan.duckdb"),
            "GLAN_EMBEDDED_STATE": str(root / "embedded")}
    server = embedded.ensure_server(state_dir=root / "embedded")  # the build's server
    cpu = CPU(json.loads((Path(env["GLAN_EMBEDDED_STATE"]) / "server.json").read_text())["pid"])
    try:
        start = time.monotonic()
        cpu.start()
        subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "training_set", "--keep-server"],
                       env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        build_s = time.monotonic() - start
        build_cpu = cpu.stop()
        instance = dg.DagsterInstance.from_config(str(root / "home"))
        build_tokens, build_calls = recorded(instance, "completion_tokens"), recorded(instance, "llm_calls")
        with sqlite3.connect(root / "llm_cache.sqlite") as con:
            cached = con.execute("SELECT request, response FROM responses ORDER BY created_at").fetchall()
        requests = [json.loads(request) for request, _ in cached]
        responses = [json.loads(response) for _, response in cached]
        by_dependency = waves(requests, [r["text"] for r in responses])  # before `resample` is dropped
        at_build_lengths(requests, responses, transformers.AutoTokenizer.from_pretrained(server.model))
        for body in requests:
            for key in (*CACHE_KEY_ONLY, "model"):  # the cache key's, not the request's
                body.pop(key, None)
        plain = []
        for c in concurrencies:
            for ordered in (None, by_dependency):
                cpu.start()
                took, tokens, failed = asyncio.run(replay(server.base_url, server.model, requests, c, ordered))
                plain.append({"order": "dependencies" if ordered else "none", "concurrency": c,
                              "seconds": round(took, 1), "completion_tokens": tokens, "failed": failed,
                              "tokens_per_s": round(tokens / took, 2), **cpu.stop()})
    finally:
        embedded.stop_server(root / "embedded")
    build_rate = build_tokens / build_s
    best = max(plain, key=lambda p: p["tokens_per_s"])
    best_ordered = max((p for p in plain if p["order"] == "dependencies"), key=lambda p: p["tokens_per_s"])
    result = {
        "measured": time.strftime("%Y-%m-%d"),
        "requests": len(requests),
        "build": {"seconds": round(build_s, 1), "llm_calls": build_calls, "completion_tokens": build_tokens,
                  "tokens_per_s": round(build_rate, 2), **build_cpu},
        "plain_client": plain,
        "ratio_to_best_plain": round(build_rate / best["tokens_per_s"], 3),
        "ratio_to_best_plain_in_dependency_order": round(build_rate / best_ordered["tokens_per_s"], 3),
    }
    print(f"{'':<38} {'requests':>8} {'seconds':>8} {'tokens':>8} {'tokens/s':>9} {'server CPU s':>13} {'other CPU s':>12}")
    print(f"{'glan build':<38} {build_calls:>8} {build_s:>8.1f} {build_tokens:>8} {build_rate:>9.2f} "
          f"{build_cpu['server_cpu_s']:>13} {build_cpu['other_cpu_s']:>12}")
    for p in plain:
        name = f"plain client, C={p['concurrency']}, " + ("dependency order" if p["order"] == "dependencies" else "all at once")
        print(f"{name:<38} {len(requests) - p['failed']:>8} {p['seconds']:>8} "
              f"{p['completion_tokens']:>8} {p['tokens_per_s']:>9} {p['server_cpu_s']:>13} {p['other_cpu_s']:>12}")
    print(f"build / best plain client: {result['ratio_to_best_plain']}; "
          f"in dependency order: {result['ratio_to_best_plain_in_dependency_order']}")
    out = Path(__file__).parent / "results" / "embedded_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
