"""The embedded OpenAI-compatible endpoint: one shared `transformers serve` per machine user.

When no OPENAI_BASE_URL is configured, glan runs offline on a packaged model served by
`transformers serve --continuous-batching` on 127.0.0.1. `ensure_server()` starts it once (a file
lock makes concurrent callers wait for the first) and every later caller reuses it through a state
file. The server runs under a watchdog (`python -m resources.embedded serve ...`) that stops it
after `idle_timeout_s` seconds without use; `touch()` and served requests count as use. The state
folder, the idle timeout and the model cache come from the settings (`glan_assets.settings`).
Inside the server, `resources.serving_patches` makes sampling and `response_format` per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resources.local_models import DEFAULT_MODEL_CACHE, local_model_dir
from resources.locks import file_lock

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_IDLE_TIMEOUT_S = 900.0
DEFAULT_STATE_DIR = Path.home() / ".cache" / "glan" / "embedded"
_STATE = "server.json"
_LOCK = "server.lock"
_USED = "last_used"
_LOG = "server.log"
_HOST = "127.0.0.1"
# Paged KV cache size. Unset, continuous batching sizes it from 80% of the machine's free RAM
# (the server then held 6.6 GB resident, 2.8 GB with this); 128 blocks of 256 tokens hold 32k
# tokens (1.5 GB for SmolLM2-135M), room for dozens of concurrent requests.
_CB_NUM_BLOCKS = 128
# Tokens per forward pass; the default 8192 sizes its attention masks at over 1 GB.
_CB_MAX_BATCH_TOKENS = 2048
# The converted weights are float32. Decoding reads every weight once per step, and float32's
# matrix products took twice as long for 2-16 rows as for one: in bfloat16 (SmolLM2's training
# dtype) the server made 1.3-2.1x the tokens/s at 1-32 requests at once
# (benchmarks/bench_server_dtype.py).
DTYPE = "bfloat16"


@dataclass(frozen=True)
class EmbeddedEndpoint:
    base_url: str  # e.g. "http://127.0.0.1:PORT/v1", for openai.AsyncOpenAI(base_url=...)
    model: str  # the `model` to send: the server is pinned to it and refuses any other


def _dir(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir


def touch(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Mark the server as in use, postponing its idle shutdown."""
    (_dir(state_dir) / _USED).touch()  # sets the mtime to now when it exists


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / _STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    tmp = state_dir / f".{_STATE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_dir / _STATE)


def _healthy(root_url: str, timeout_s: float = 5.0) -> bool:
    # /health, not /v1/models: the latter scans the Hugging Face cache on every call.
    try:
        with urllib.request.urlopen(f"{root_url}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (OSError, http.client.HTTPException):  # URLError is an OSError
        return False


def _group_members(pgid: int) -> list[int]:
    """Live processes of our server tree in process group `pgid`.

    Checking the command line keeps a stale state file from ever killing an unrelated process
    that reused the pid.
    """
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()  # empty for a zombie
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid and b"resources.embedded" in cmdline:
            members.append(int(proc.name))
    return members


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        return sock.getsockname()[1]


def _log_tail(state_dir: Path, lines: int = 40) -> str:
    try:
        with open(state_dir / _LOG, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# Popen handles of the watchdogs this process started, so that stopping one also reaps it.
_children: dict[int, subprocess.Popen] = {}


def _kill_group(pgid: int, timeout_s: float = 15.0) -> None:
    """Stop the watchdog and server of process group `pgid` (the watchdog's pid), then reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_members(pgid):
            break
        os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout_s
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if (child := _children.pop(pgid, None)) is not None:
        child.wait()


def _stop_locked(state_dir: Path) -> None:
    state = _read_state(state_dir)
    if state is not None:
        _kill_group(int(state["pid"]))
    (state_dir / _STATE).unlink(missing_ok=True)


def stop_server(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Stop the shared server, if one runs. Idempotent."""
    sd = _dir(state_dir)
    with file_lock(sd / _LOCK):
        _stop_locked(sd)


def ensure_server(
    model: str = DEFAULT_MODEL,
    state_dir: Path = DEFAULT_STATE_DIR,
    startup_timeout_s: float = 300,
    *,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    model_cache: Path = DEFAULT_MODEL_CACHE,
) -> EmbeddedEndpoint:
    """The running shared server for `model`, started (once, whoever asks first) if none is; a
    server it starts stops itself after `idle_timeout_s` unused."""
    sd = _dir(state_dir)
    served = str(local_model_dir(model, model_cache).resolve())
    if "@" in served:  # transformers serve splits model ids at "@" into a revision
        raise ValueError(f"the model path {served} must not contain '@'")
    touch(sd)
    with file_lock(sd / _LOCK):
        state = _read_state(sd)
        if state is not None:
            if state.get("model") == served and _alive(state):
                return EmbeddedEndpoint(state["base_url"], served)
            _stop_locked(sd)  # dead, hung, or serving another model
        state = _start(sd, served, startup_timeout_s, idle_timeout_s)
        _write_state(sd, state)
    touch(sd)
    return EmbeddedEndpoint(state["base_url"], served)


def _alive(state: dict[str, Any]) -> bool:
    if int(state["pid"]) not in _group_members(int(state["pid"])):
        return False
    # A server busy with a full batch can answer slowly; give it a few chances before replacing it.
    return any(_healthy(state["root_url"], timeout_s=10) for _ in range(3))


def _server_variables(state_dir: Path) -> list[str]:
    """What the server's processes need on top of the environment they inherit (the settings set
    the process-wide ones, `OMP_WAIT_POLICY` among them), as `env` assignments: the child
    inherits this process's environment and no copy of it is made here."""
    (state_dir / "hf-hub").mkdir(exist_ok=True)
    return [
        "HF_HUB_OFFLINE=1",
        "TRANSFORMERS_OFFLINE=1",
        # An empty hub cache: /v1/models scans it, and answers 500 when it does not exist.
        f"HF_HUB_CACHE={state_dir / 'hf-hub'}",
        "TOKENIZERS_PARALLELISM=false",
        # The watchdog runs `-m resources.embedded` from the state dir: this checkout's, whichever
        # glan is installed. The server imports nothing else outside the interpreter's packages.
        f"PYTHONPATH={Path(__file__).resolve().parent.parent}",
    ]


def _start(state_dir: Path, served: str, startup_timeout_s: float, idle_timeout_s: float) -> dict[str, Any]:
    port = _free_port()
    root_url = f"http://{_HOST}:{port}"
    cmd = [
        "/usr/bin/env", *_server_variables(state_dir), sys.executable, "-m", "resources.embedded", "serve",
        "--model", served, "--port", str(port), "--state-dir", str(state_dir), "--idle-timeout", str(idle_timeout_s),
    ]  # fmt: skip
    started = time.monotonic()
    with open(state_dir / _LOG, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            start_new_session=True,  # its own process group: stop_server kills watchdog and server together
        )
    _children[proc.pid] = proc
    try:
        deadline = started + startup_timeout_s
        while not _healthy(root_url, timeout_s=2):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the embedded LLM server exited with code {proc.returncode} while starting; "
                    f"log {state_dir / _LOG}:\n{_log_tail(state_dir)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the embedded LLM server was not healthy after {startup_timeout_s:.0f} s; "
                    f"log {state_dir / _LOG}:\n{_log_tail(state_dir)}"
                )
            time.sleep(0.5)
        try:
            _warm_up(root_url, served, max(10.0, deadline - time.monotonic()))
        except (OSError, http.client.HTTPException) as exc:
            raise RuntimeError(
                f"the embedded LLM server failed its first request ({exc}); "
                f"log {state_dir / _LOG}:\n{_log_tail(state_dir)}"
            ) from exc
    except BaseException:
        _kill_group(proc.pid)
        raise
    return {
        "pid": proc.pid,
        "port": port,
        "root_url": root_url,
        "base_url": f"{root_url}/v1",
        "model": served,
        "started_at": time.time(),
        "startup_s": round(time.monotonic() - started, 1),
    }


def _warm_up(root_url: str, served: str, timeout_s: float) -> None:
    # The first chat request sets up continuous batching (its KV cache and sampling processors);
    # doing it here keeps that cost, and any failure, out of the callers' first real request.
    body = {"model": served, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    req = urllib.request.Request(
        f"{root_url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        resp.read()


# ---- inside the server process tree ------------------------------------------------------------


def serve_command(model: str, port: int, dtype: str = DTYPE) -> list[str]:
    """The command line of the server itself (`transformers serve`, patched), on 127.0.0.1."""
    return [
        sys.executable, "-m", "resources.embedded", "transformers-serve", model,
        "--continuous-batching", "--host", _HOST, "--port", str(port),
        "--cb-num-blocks", str(_CB_NUM_BLOCKS), "--cb-max-batch-tokens", str(_CB_MAX_BATCH_TOKENS),
        "--dtype", dtype,
    ]  # fmt: skip


def _watchdog(model: str, port: int, state_dir: Path, idle_timeout_s: float) -> int:
    """Run `transformers serve` and stop it once nothing has used it for `idle_timeout_s`."""
    server = subprocess.Popen(serve_command(model, port), stdin=subprocess.DEVNULL)

    def terminate(*_: object) -> None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        sys.exit(server.wait())

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    started = time.time()
    poll_s = min(30.0, max(0.5, idle_timeout_s / 10))
    while server.poll() is None:
        time.sleep(poll_s)
        if time.time() - _last_use(state_dir, started) < idle_timeout_s:
            continue
        with file_lock(state_dir / _LOCK):  # ensure_server touches before locking, so it sees a fresh use here
            if time.time() - _last_use(state_dir, started) < idle_timeout_s:
                continue
            print(f"[glan] idle for {idle_timeout_s:.0f} s, stopping the embedded server", flush=True)
            state = _read_state(state_dir)
            if state is not None and state.get("pid") == os.getpid():
                (state_dir / _STATE).unlink(missing_ok=True)
            terminate()
    return server.returncode


def _last_use(state_dir: Path, started: float) -> float:
    # Served requests count too: the server logs each one, so a batch longer than the timeout survives.
    times = [started]
    for name in (_USED, _LOG):
        try:
            times.append((state_dir / name).stat().st_mtime)
        except FileNotFoundError:
            pass
    return max(times)


def _transformers_serve(argv: list[str]) -> None:
    # Unpatched, the server would sample every request like the first and ignore response_format:
    # the small model's JSON then fails where a grammar would have held it. Refuse instead.
    try:
        from resources import serving_patches

        serving_patches.install()
    except (ImportError, AttributeError) as exc:
        import transformers

        sys.exit(
            f"[glan] the embedded server cannot apply its patches to transformers {transformers.__version__} "
            f"({exc}); install the version pyproject.toml pins: make setup"
        )
    from transformers.cli.transformers import app  # not main(): that first checks PyPI for updates

    app(["serve", *argv], prog_name="transformers")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["transformers-serve"]:  # its flags are transformers serve's own
        _transformers_serve(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m resources.embedded")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the embedded server under the idle watchdog")
    serve.add_argument("--model", required=True, help="local model directory")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--state-dir", type=Path, required=True)
    serve.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S)
    stop = sub.add_parser("stop", help="stop the shared embedded server")
    stop.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _watchdog(args.model, args.port, args.state_dir, args.idle_timeout)
    stop_server(args.state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
