"""The packaged-model resolver, and the real embedded `transformers serve` over HTTP.

The `embedded` tests start a real server in a temporary state dir, so they never touch a user's
shared server; the converted model stays in the default cache, converted once per machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from resources import embedded
from resources.local_models import PACKAGED_MODELS, local_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        local_model_dir("no-such-model")
    for name in PACKAGED_MODELS:
        assert name in str(excinfo.value)


def test_existing_directory_is_used_as_is(tmp_path: Path) -> None:
    assert local_model_dir(str(tmp_path)) == tmp_path


def _answers(root_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{root_url}/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("embedded")
    yield path
    embedded.stop_server(path)  # also when a test failed midway


@pytest.mark.embedded
def test_one_server_is_started_and_then_reused(state_dir: Path) -> None:
    first = embedded.ensure_server(state_dir=state_dir)
    pid = embedded._read_state(state_dir)["pid"]
    second = embedded.ensure_server(state_dir=state_dir)
    assert second == first
    assert embedded._read_state(state_dir)["pid"] == pid
    assert first.base_url.startswith("http://127.0.0.1:") and first.base_url.endswith("/v1")


@pytest.mark.embedded
def test_chat_completion_over_http(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=120)
    resp = client.chat.completions.create(
        model=endpoint.model,
        messages=[{"role": "user", "content": "Name three colors."}],
        max_tokens=16,
        temperature=0.7,
        top_p=0.95,
    )
    assert resp.choices[0].message.content.strip()
    assert resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 16


@pytest.mark.embedded
def test_temperature_zero_is_greedy(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=120)

    def reply() -> str:
        resp = client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": "Give me a name for a cat."}],
            max_tokens=8,
            temperature=0.0,
        )
        return resp.choices[0].message.content

    assert reply() == reply()


@pytest.mark.embedded
def test_stop_server_stops_it(state_dir: Path) -> None:
    embedded.ensure_server(state_dir=state_dir)
    root_url = embedded._read_state(state_dir)["root_url"]
    assert _answers(root_url)
    embedded.stop_server(state_dir)
    assert not _answers(root_url)
    assert embedded._read_state(state_dir) is None
    embedded.stop_server(state_dir)  # idempotent


def _watchdogs(state_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and str(state_dir).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.embedded
def test_concurrent_processes_share_one_server(state_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from resources import embedded; "
        "print(embedded.ensure_server(state_dir=Path(sys.argv[1])).base_url)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(state_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    urls = {proc.communicate(timeout=300)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(urls) == 1
    assert len(_watchdogs(state_dir)) == 1
    embedded.stop_server(state_dir)
    assert _watchdogs(state_dir) == []


@pytest.mark.embedded
def test_idle_server_stops_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLAN_EMBEDDED_IDLE_TIMEOUT", "3")
    try:
        embedded.ensure_server(state_dir=tmp_path)
        root_url = embedded._read_state(tmp_path)["root_url"]
        # Watch the processes, not the port: every request the server logs counts as use.
        deadline = time.monotonic() + 60
        while _watchdogs(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _watchdogs(tmp_path) == []
        assert embedded._read_state(tmp_path) is None
        assert not _answers(root_url)
    finally:
        embedded.stop_server(tmp_path)
