"""The distributed deployment on one machine, every part a real server in its own process:
PostgreSQL for the Dagster instance, Redis as the Celery broker, Celery workers running
the steps, the daemon dequeuing runs. An 8-partition backfill must keep to the run queue's
limit, the LLM pool's cap and the endpoint's request cap, and write what a sequential
build writes. Also: `dagster dev` exits promptly on SIGTERM to its process group.

Needs Debian's `postgresql` and `redis-server` (`make db-deps queue-deps`) and the
`distributed` extra; skipped when the servers are not installed.
"""

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from glob import glob
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from tests.conftest import Project

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOY = REPO / "deploy"
WORKSPACE = DEPLOY / "celery" / "workspace.yaml"

DISCIPLINES = ["Physics", "Astronomy", "Chemistry", "Geology", "Botany", "Zoology", "Ecology", "Genetics"]
MAX_RUNS = 4  # the run queue's limit
POOL_CAP = 2  # `dagster instance concurrency set llm 2`
PER_STEP = 3  # GLAN_MAX_CONCURRENCY: requests in flight per step
WORKERS = 3  # Celery worker processes (one step at a time each): more than the pool's cap


def _pg_bin(name: str) -> str | None:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start(args: list[str], log: Path, **kw) -> subprocess.Popen:
    """A process in its own process group (session), its output in `log`."""
    out = log.open("ab")
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
    """Signal the process's whole group, wait for the leader, then make sure the group is
    gone (SIGKILL what is left). Returns how long the leader took to exit."""
    t0 = time.monotonic()
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    took = time.monotonic() - t0
    for _ in range(50):  # the group's other members
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return took


def _as_postgres_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 with a `dagster` database; yields the
    DAGSTER_PG_* variables that deploy/postgres/dagster.yaml reads."""
    initdb, server = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and server):
        pytest.skip("PostgreSQL is not installed (make db-deps)")
    root = Path(tempfile.mkdtemp(prefix="glan-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_postgres_user([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        _as_postgres_user([server, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root),
                           "-c", "max_connections=300", "-c", "fsync=off"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_for_port(port, 30, proc)
        import psycopg2

        for _ in range(50):  # the port opens slightly before connections are accepted
            try:
                con = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE dagster")
        con.close()
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "postgres",
               "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": "dagster"}
    finally:
        stop(proc, signal.SIGINT)  # fast shutdown
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis(tmp_path):
    server = shutil.which("redis-server")
    if not server:
        pytest.skip("redis-server is not installed (make queue-deps)")
    root = tmp_path / "redis"
    root.mkdir()
    port = free_port()
    proc = start([server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root), "--save", "",
                  "--appendonly", "no", "--protected-mode", "no"], root / "redis.log")
    try:
        wait_for_port(port, 30, proc)
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(proc)


class RequestTimes:
    """Arrival and finish time of every request the fake endpoint answers (wraps its handler)."""

    def __init__(self, fake_llm):
        self.spans: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        handler = fake_llm.server.RequestHandlerClass
        original = handler.do_POST
        times = self

        def do_post(self_):
            t0 = time.time()
            try:
                original(self_)
            finally:
                with times.lock:
                    times.spans.append((t0, time.time()))

        handler.do_POST = do_post


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """Most intervals open at once; an interval that ends when another starts does not overlap it."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def taxonomy(names: list[str]) -> str:
    return "fields:\n  - name: Natural Sciences\n    sub_fields:\n      - name: Sciences\n        disciplines:\n" + "".join(
        f"          - name: {n}\n" for n in names)


def table_counts(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1, 2"
        ).fetchall()
        return {f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in tables}


def instance_home(root: Path) -> Path:
    """DAGSTER_HOME with deploy/postgres/dagster.yaml, its run limit set to MAX_RUNS."""
    config = yaml.safe_load((DEPLOY / "postgres" / "dagster.yaml").read_text())
    config = copy.deepcopy(config)
    config["concurrency"]["runs"]["max_concurrent_runs"] = MAX_RUNS
    home = root / "dagster_home_pg"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


# Stops every sensor of the workspace's code locations (`dagster sensor stop`, for all of them).
STOP_SENSORS = """
import sys
from dagster import DagsterInstance
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

with DagsterInstance.get() as instance, WorkspaceProcessContext(instance, WorkspaceFileTarget([sys.argv[1]])) as ctx:
    for location in ctx.create_request_context().code_locations:
        for repo in location.get_repositories().values():
            for sensor in repo.get_sensors():
                instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
                print(sensor.name)
"""


def cli(args: list[str], env: dict, timeout: float = 300) -> str:
    out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
    return out.stdout


def test_backfill_on_celery_workers_keeps_every_limit(project, fake_llm, postgres, redis, tmp_path, monkeypatch):
    from dagster._core.instance.ref import InstanceRef

    project.taxonomy.write_text(taxonomy(DISCIPLINES))
    fake_llm.delay_s = 0.3
    times = RequestTimes(fake_llm)
    home = instance_home(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **project.subprocess_env(), **postgres,
        "DAGSTER_HOME": str(home),
        "DAGSTER_CELERY_BROKER": f"{redis}/0",
        "DAGSTER_CELERY_BACKEND": f"{redis}/1",
        "GLAN_MAX_CONCURRENCY": str(PER_STEP),
        "PYTHONPATH": str(REPO),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `dagster-celery worker start` runs `celery`
    }
    for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(k, env[k])

    # Create the schema once, before any other process touches the database.
    cli([str(BIN / "dagster"), "instance", "migrate"], env)
    cli([str(BIN / "dagster"), "instance", "concurrency", "set", "llm", str(POOL_CAP)], env)
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    instance.add_dynamic_partitions("discipline", DISCIPLINES)
    # The backfill decides what runs; the project's sensors would add runs of their own.
    stopped = cli([sys.executable, "-c", STOP_SENSORS, str(WORKSPACE)], env).split()
    assert "taxonomy_sensor" in stopped, stopped

    procs: list[subprocess.Popen] = []
    try:
        for i in range(WORKERS):
            procs.append(start(
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                 "-y", str(DEPLOY / "celery" / "celery.yaml"), "-n", f"glan{i}", "--",
                 "--concurrency=1", "--pool=prefork"],
                logs / f"worker{i}.log", env=env, cwd=REPO))
        procs.append(start([str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)], logs / "daemon.log", env=env, cwd=REPO))

        out = cli([str(BIN / "dagster"), "job", "backfill", "-w", str(WORKSPACE), "-j", "build_discipline",
                   "--partitions", ",".join(DISCIPLINES), "--noprompt"], env)
        assert "Launched backfill" in out, out

        deadline = time.monotonic() + 600
        while True:
            runs = instance.get_runs()
            if len(runs) == len(DISCIPLINES) and all(r.is_finished for r in runs):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not finished: {[(r.tags.get('dagster/partition'), r.status) for r in runs]}")
            time.sleep(2)
    finally:
        for p in reversed(procs):
            stop(p)
    request_spans = list(times.spans)

    records = instance.get_run_records()
    failed = [r.dagster_run for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    assert not failed, "\n".join(
        str(e.dagster_event.message if e.dagster_event else e.user_message) for r in failed for e in instance.all_logs(r.run_id)
    )
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == sorted(DISCIPLINES)

    # Runs: the queue kept at most MAX_RUNS in progress (and did run several at once).
    run_spans = [(r.start_time, r.end_time) for r in records]
    max_runs = max_overlap(run_spans)

    # Steps: every step ran on a Celery worker; the LLM-calling ones never above the pool's cap.
    from glan_assets.glan import LEVELS

    llm_levels = {lv.name for lv in LEVELS if lv.stages}
    step_spans, all_steps, celery_workers = [], 0, set()
    for r in records:
        starts, ends = {}, {}
        for e in instance.all_logs(r.dagster_run.run_id):
            ev = e.dagster_event
            if ev is None:
                continue
            if ev.event_type_value == "STEP_START":
                starts[e.step_key] = e.timestamp
            elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                ends[e.step_key] = e.timestamp
            elif ev.event_type_value == "ENGINE_EVENT" and ev.engine_event_data and "Celery worker" in (ev.engine_event_data.metadata or {}):
                celery_workers.add(ev.engine_event_data.metadata["Celery worker"].value)
        all_steps += len(starts)
        step_spans += [(starts[k], ends[k]) for k in starts if k in llm_levels]
    max_steps = max_overlap(step_spans)
    max_requests = max_overlap(request_spans)
    print(f"\nruns: max {max_runs} in progress (limit {MAX_RUNS}); LLM steps: {len(step_spans)} of {all_steps}, "
          f"max {max_steps} at once (pool cap {POOL_CAP}); requests: {len(request_spans)}, max {max_requests} at once "
          f"(cap {POOL_CAP} x {PER_STEP} = {POOL_CAP * PER_STEP}); Celery workers used: {sorted(celery_workers)}")
    assert len(celery_workers) >= 2, celery_workers
    assert 2 <= max_runs <= MAX_RUNS
    assert len(step_spans) == len(DISCIPLINES) * len(llm_levels)
    assert 1 <= max_steps <= POOL_CAP
    assert 1 <= max_requests <= POOL_CAP * PER_STEP

    # Rows: the same as a sequential build of the same taxonomy into a fresh file.
    seq = Project(tmp_path / "sequential", fake_llm.base_url) if (tmp_path / "sequential").mkdir() is None else None
    seq.taxonomy.write_text(taxonomy(DISCIPLINES))
    seq.env["GLAN_MAX_CONCURRENCY"] = str(PER_STEP)
    for k, v in seq.env.items():
        monkeypatch.setenv(k, v)
    summaries = seq.build()
    assert len(summaries) == len(DISCIPLINES)
    distributed, sequential = table_counts(project.db), table_counts(seq.db)
    print(f"rows: {json.dumps(distributed)}")
    assert distributed == sequential
    assert all(distributed[f"main.{lv}"] > 0 for lv in llm_levels if f"main.{lv}" in distributed)


def test_dagster_dev_exits_promptly_on_sigterm_to_its_group(project, fake_llm, tmp_path):
    """`dagster dev` on a copy of the committed instance, its sensors' runs calling the
    endpoint, then SIGTERM to its process group: it exits within 30 s (issue 14)."""
    import urllib.request

    fake_llm.delay_s = 1.0  # requests in flight when the signal comes
    home = tmp_path / "dev_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    proc = start([str(BIN / "dagster"), "dev", "-p", str(port)], tmp_path / "dev.log",
                 env={**project.subprocess_env(), "DAGSTER_HOME": str(home)}, cwd=REPO)
    try:
        from dagster._core.instance.ref import InstanceRef

        deadline = time.monotonic() + 240
        while True:  # the UI is up; only then open the instance (its SQLite schema exists by then)
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not answer within 240 s"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=10).read()
                break
            except OSError:
                time.sleep(0.5)
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        while not instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=1):
            # the sensors' runs are going (steps writing, maybe calling the endpoint)
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no run started within 240 s"
            time.sleep(0.5)
        time.sleep(5)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        leader_s = time.monotonic() - t0
        while time.monotonic() - t0 < 60:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        group_s = time.monotonic() - t0
        print(f"\ndagster dev exited {leader_s:.1f} s after SIGTERM to its group; the whole group was gone after {group_s:.1f} s")
        assert proc.returncode is not None and leader_s <= 30, f"dagster dev still running {leader_s:.0f} s after SIGTERM"
    finally:
        stop(proc, signal.SIGKILL, timeout=10)
