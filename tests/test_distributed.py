"""The distributed deployment on one machine, every part a real server in its own process,
secured as deploy/README.md says: PostgreSQL for the Dagster instance (TLS required, the
password from a .pgpass file), Redis as the Celery broker (TLS and a password), Celery
workers running the steps, the daemon dequeuing runs, the webserver on 127.0.0.1 behind
nginx with TLS and basic auth (deploy/proxy/glan.conf). An 8-partition backfill launched
through the proxy must keep to the run queue's limit, the LLM pool's cap and the endpoint's
request cap, and write what a sequential build writes; a worker with a wrong broker password
takes no step; the UI, its GraphQL and its websocket answer 401 without the right
credentials. Also: `dagster dev` exits promptly on SIGTERM to its process group.

Needs Debian's `postgresql`, `redis-server`, `nginx` and `openssl` (`make db-deps queue-deps
proxy-deps`) and the `distributed` extra; skipped when they are not installed.
"""

import base64
import copy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from glob import glob
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from tests.conftest import Project
from tests.spans import max_overlap

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOY = REPO / "deploy"
WORKSPACE = DEPLOY / "celery" / "workspace.yaml"
PROXY_CONF = DEPLOY / "proxy" / "glan.conf"

DISCIPLINES = ["Physics", "Astronomy", "Chemistry", "Geology", "Botany", "Zoology", "Ecology", "Genetics"]
MAX_RUNS = 4  # the run queue's limit
POOL_CAP = 2  # `dagster instance concurrency set llm 2`
PER_STEP = 3  # GLAN_MAX_CONCURRENCY: requests in flight per step
WORKERS = 3  # Celery worker processes (one step at a time each): more than the pool's cap

# This run's secrets: none may show up in a log, the event log or a file under DAGSTER_HOME.
PG_PASSWORD = secrets.token_hex(16)
REDIS_PASSWORD = secrets.token_hex(16)
UI_USER, UI_PASSWORD = "alice", secrets.token_hex(16)


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
def tls():
    """A self-signed certificate for 127.0.0.1 and its key, in a folder the servers' users can
    read: the test's PostgreSQL, Redis and nginx serve it, its clients trust it."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is not installed (make proxy-deps)")
    root = Path(tempfile.mkdtemp(prefix="glan-tls-"))
    root.chmod(0o755)
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    try:
        yield cert, key
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres(tls):
    """A throwaway PostgreSQL server on 127.0.0.1 with a `dagster` database that takes only TLS
    connections with a password; yields the variables deploy/postgres/dagster.yaml needs: the
    DAGSTER_PG_* and PGPASSFILE, a .pgpass file with the password."""
    initdb, server = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and server):
        pytest.skip("PostgreSQL is not installed (make db-deps)")
    import psycopg2

    root = Path(tempfile.mkdtemp(prefix="glan-pg-"))
    data = root / "data"
    # The server's own copy of the key: PostgreSQL wants it private to the server's user.
    key, pwfile = root / "server.key", root / "pwfile"
    shutil.copy(tls[1], key)
    key.chmod(0o600)
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        for path in (root, key, pwfile):
            shutil.chown(path, "postgres", "postgres")
    subprocess.run(_as_postgres_user([initdb, "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True)
    pwfile.unlink()
    # Over TCP: TLS and the password, or nothing (no `host` line, so plain connections are refused).
    (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
    port = free_port()
    proc = subprocess.Popen(
        _as_postgres_user([server, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root),
                           "-c", "max_connections=300", "-c", "fsync=off", "-c", "ssl=on",
                           "-c", f"ssl_cert_file={tls[0]}", "-c", f"ssl_key_file={key}"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_for_port(port, 30, proc)
        address = {"host": "127.0.0.1", "port": port, "user": "postgres"}
        for _ in range(50):  # the port opens slightly before connections are accepted
            try:
                con = psycopg2.connect(**address, dbname="postgres", password=PG_PASSWORD, sslmode="require")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE dagster")
        con.close()
        # What the instance's success below then proves: it used TLS and the password.
        for refused in ({"password": PG_PASSWORD, "sslmode": "disable"}, {"password": "wrong", "sslmode": "require"}):
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(**address, dbname="dagster", **refused)
        pgpass = root / "pgpass"  # the test's user owns it (libpq ignores a .pgpass others can read)
        pgpass.write_text(f"127.0.0.1:{port}:*:postgres:{PG_PASSWORD}\n")
        pgpass.chmod(0o600)
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "postgres",
               "DAGSTER_PG_DB": "dagster", "PGPASSFILE": str(pgpass)}
    finally:
        stop(proc, signal.SIGINT)  # fast shutdown
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis(tmp_path, tls):
    """A throwaway Redis on 127.0.0.1 that speaks only TLS and wants a password (from its config
    file, not its command line); yields `url(db, password)`, a Celery URL for it."""
    server = shutil.which("redis-server")
    if not server:
        pytest.skip("redis-server is not installed (make queue-deps)")
    root = tmp_path / "redis"
    root.mkdir()
    port = free_port()
    conf = root / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport 0\ntls-port {port}\ntls-cert-file {tls[0]}\ntls-key-file {tls[1]}\n"
                    f"tls-ca-cert-file {tls[0]}\ntls-auth-clients no\nrequirepass {REDIS_PASSWORD}\n"
                    f"dir {root}\nsave \"\"\nappendonly no\n")
    conf.chmod(0o600)
    proc = start([server, str(conf)], root / "redis.log")

    def url(db: int, password: str = REDIS_PASSWORD) -> str:
        return f"rediss://:{password}@127.0.0.1:{port}/{db}?ssl_cert_reqs=required&ssl_ca_certs={tls[0]}"

    try:
        wait_for_port(port, 30, proc)
        import redis as redis_client

        assert redis_client.Redis.from_url(url(0)).ping()
        with pytest.raises(redis_client.AuthenticationError):  # no password
            redis_client.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tls[0])).ping()
        with pytest.raises(redis_client.ConnectionError):  # no TLS
            redis_client.Redis(host="127.0.0.1", port=port, password=REDIS_PASSWORD, socket_timeout=5).ping()
        yield url
    finally:
        stop(proc)


def nginx_bin() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def start_proxy(root: Path, tls: tuple[Path, Path], upstream: int, log: Path) -> tuple[subprocess.Popen, int]:
    """nginx with deploy/proxy/glan.conf on 127.0.0.1 in front of the webserver's port: the
    shipped file, with this test's port, certificate and password file put in its place."""
    root.chmod(0o755)  # nginx's workers run as www-data when the test runs as root
    htpasswd = root / "glan.htpasswd"
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=UI_PASSWORD, text=True,
                            capture_output=True, check=True).stdout.strip()
    htpasswd.write_text(f"{UI_USER}:{hashed}\n")
    htpasswd.chmod(0o644)
    port = free_port()
    site = PROXY_CONF.read_text()
    for shipped, here in {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/ssl/certs/dagster.example.com.pem;": f"{tls[0]};",
        "/etc/ssl/private/dagster.example.com.key;": f"{tls[1]};",
        "/etc/nginx/glan.htpasswd;": f"{htpasswd};",
        "proxy_pass http://127.0.0.1:3000;": f"proxy_pass http://127.0.0.1:{upstream};",
    }.items():
        assert site.count(shipped) == 1, f"{PROXY_CONF} no longer holds {shipped!r} once"
        site = site.replace(shipped, here)
    (root / "glan.conf").write_text(site)
    temp = " ".join(f"{kind}_temp_path {root}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (root / "nginx.conf").write_text(
        ("user www-data;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {root}/nginx.pid;\nerror_log {log};\nevents {{ worker_connections 256; }}\n"
        f"http {{ access_log {root}/access.log; {temp} include {root}/glan.conf; }}\n"
    )
    proc = start([nginx_bin(), "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(log)], log)
    wait_for_port(port, 30, proc)
    return proc, port


def https(port: int, cert: Path, path: str, auth: tuple[str, str] | None = None, body: dict | None = None):
    """(status, body) of a GET, or a JSON POST, to the proxy, trusting only the test's certificate."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(cert)), timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def graphql_websocket(port: int, cert: Path, auth: tuple[str, str] | None) -> tuple[int, dict | None]:
    """Opens the UI's subscription websocket (/graphql, protocol graphql-ws) through the proxy and
    sends `connection_init`: the handshake's status and, once upgraded, the server's first message."""
    headers = [
        "GET /graphql HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: graphql-ws",
    ]
    if auth:
        headers.append("Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            assert chunk, reply
            reply += chunk
        status = int(reply.split(b" ", 2)[1])
        if status != 101:
            return status, None
        rest = reply.split(b"\r\n\r\n", 1)[1]
        payload = json.dumps({"type": "connection_init", "payload": {}}).encode()
        mask = os.urandom(4)  # a client's frames are masked (RFC 6455); this one is short (< 126 bytes)
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            chunk = sock.recv(4096)
            assert chunk, f"the websocket closed before answering: {rest!r}"
            rest += chunk
        assert rest[0] == 0x81 and rest[1] < 126, rest  # one unmasked, short text frame
        return status, json.loads(rest[2:2 + rest[1]])


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""


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


def test_backfill_through_the_proxy_keeps_every_limit_and_lets_no_one_else_in(
        project, fake_llm, postgres, redis, tls, tmp_path, monkeypatch):
    from dagster._core.instance.ref import InstanceRef

    if not nginx_bin():
        pytest.skip("nginx is not installed (make proxy-deps)")
    project.taxonomy.write_text(taxonomy(DISCIPLINES))
    fake_llm.delay_s = 0.3
    times = RequestTimes(fake_llm)
    home = instance_home(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **project.subprocess_env(), **postgres,
        "DAGSTER_HOME": str(home),
        "CELERY_BROKER_URL": redis(0),
        "CELERY_RESULT_BACKEND": redis(1),
        "GLAN_MAX_CONCURRENCY": str(PER_STEP),
        "PYTHONPATH": str(REPO),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `dagster-celery worker start` runs `celery`
    }
    for k, v in postgres.items():
        monkeypatch.setenv(k, v)

    # Create the schema once, before any other process touches the database.
    cli([str(BIN / "dagster"), "instance", "migrate"], env)
    cli([str(BIN / "dagster"), "instance", "concurrency", "set", "llm", str(POOL_CAP)], env)
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    instance.add_dynamic_partitions("discipline", DISCIPLINES)
    # The backfill decides what runs; the project's sensors would add runs of their own.
    stopped = cli([sys.executable, "-c", STOP_SENSORS, str(WORKSPACE)], env).split()
    assert "taxonomy_sensor" in stopped, stopped

    def worker(name: str, worker_env: dict) -> subprocess.Popen:
        return start([str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                      "-y", str(DEPLOY / "celery" / "celery.yaml"), "-n", name, "--",
                      "--concurrency=1", "--pool=prefork"], logs / f"{name}.log", env=worker_env, cwd=REPO)

    procs: list[subprocess.Popen] = []
    proxy_root = Path(tempfile.mkdtemp(prefix="glan-proxy-"))  # outside tmp_path: nginx's workers must reach it
    try:
        # A worker that knows where the broker is, but not its password, starts first.
        procs.append(worker("intruder", {**env, "CELERY_BROKER_URL": redis(0, "wrong"),
                                         "CELERY_RESULT_BACKEND": redis(1, "wrong")}))
        for i in range(WORKERS):
            procs.append(worker(f"glan{i}", env))
        procs.append(start([str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)], logs / "daemon.log", env=env, cwd=REPO))
        web_port = free_port()
        procs.append(start([str(BIN / "dagster-webserver"), "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(web_port)],
                           logs / "webserver.log", env=env, cwd=REPO))
        proxy, proxy_port = start_proxy(proxy_root, tls, web_port, logs / "nginx.log")
        procs.append(proxy)

        user, cert = (UI_USER, UI_PASSWORD), tls[0]
        deadline = time.monotonic() + 300
        while (status := https(proxy_port, cert, "/server_info", user)[0]) != 200:  # 502 until the webserver is up
            assert procs[-2].poll() is None, (logs / "webserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"the webserver did not answer through the proxy within 300 s ({status})"
            time.sleep(1)

        # Without credentials, or with wrong ones, nothing gets past the proxy: the UI, its
        # GraphQL (the launch itself), its websocket.
        launch = {"query": LAUNCH_BACKFILL, "variables": {"params": {
            "selector": {"partitionSetName": "build_discipline_partition_set",
                         "repositorySelector": {"repositoryLocationName": "glan", "repositoryName": "__repository__"}},
            "partitionNames": DISCIPLINES}}}
        for who in (None, (UI_USER, "wrong"), ("mallory", UI_PASSWORD)):
            assert https(proxy_port, cert, "/", who)[0] == 401, who
            assert https(proxy_port, cert, "/graphql", who, launch)[0] == 401, who
            assert graphql_websocket(proxy_port, cert, who) == (401, None), who
        assert not instance.get_backfills()
        # With them: the UI, a live websocket, and the backfill launched.
        status, page = https(proxy_port, cert, "/", user)
        assert status == 200 and b"<html" in page.lower(), (status, page[:200])
        assert graphql_websocket(proxy_port, cert, user) == (101, {"type": "connection_ack"})
        status, reply = https(proxy_port, cert, "/graphql", user, launch)
        result = json.loads(reply)["data"]["launchPartitionBackfill"] if status == 200 else reply
        assert status == 200 and result["__typename"] == "LaunchBackfillSuccess", (status, result)
        assert [b.backfill_id for b in instance.get_backfills()] == [result["backfillId"]]

        deadline = time.monotonic() + 600
        while True:
            runs = instance.get_runs()
            if len(runs) == len(DISCIPLINES) and all(r.is_finished for r in runs):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not finished: {[(r.tags.get('dagster/partition'), r.status) for r in runs]}")
            time.sleep(2)
        assert procs[0].poll() is None, "the intruder's worker exited: it was refused, but not while the runs went"
    finally:
        for p in reversed(procs):
            stop(p)
        if (proxy_root / "access.log").exists():
            shutil.copy(proxy_root / "access.log", logs / "nginx-access.log")
        shutil.rmtree(proxy_root, ignore_errors=True)
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
    from glan_assets.glan.method import LEVELS

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
    # The intruder was refused by Redis and took no step; the others did take theirs.
    intruder_log = (logs / "intruder.log").read_text()
    assert "invalid username-password pair" in intruder_log, intruder_log[-3000:]
    assert not any(w.startswith("intruder@") for w in celery_workers), celery_workers
    assert " received" not in intruder_log and any(
        " received" in (logs / f"glan{i}.log").read_text() for i in range(WORKERS)), intruder_log[-3000:]
    # No password reached the event log, a process's log or a file under DAGSTER_HOME.
    texts = {f"events of run {r.dagster_run.run_id}": "\n".join(dg.serialize_value(e) for e in instance.all_logs(r.dagster_run.run_id))
             for r in records}
    texts.update({str(f): f.read_bytes().decode("utf-8", "replace")
                  for folder in (home, logs) for f in folder.rglob("*") if f.is_file()})
    for secret in (PG_PASSWORD, REDIS_PASSWORD, UI_PASSWORD):
        assert not [where for where, text in texts.items() if secret in text]
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
    summaries = seq.build(until="glan_quality")  # what the backfill's job builds
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


def test_kubernetes_values_write_no_secret_and_glan_accepts_their_settings():
    """deploy/k8s/values.yaml holds no password, and the environment it gives the code location
    is one glan's settings accept: a DuckLake catalog DSN without a password, over TLS (it
    once showed a DSN with `password=`, which glan refuses)."""
    from glan_assets.registry import settings_from_env

    def leaves(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, str(k))
        elif isinstance(node, list):
            for v in node:
                yield from leaves(v, key)
        else:
            yield key, node

    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    written = [(k, v) for k, v in leaves(values) if isinstance(v, str) and (
        "password" in k.lower() or re.search(r"(^|\s|[?&])password\s*=|://[^/@]*:[^/@]*@", v))]  # as glan checks a DSN
    assert not written, f"passwords written in values.yaml: {written}"
    (glan,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in glan["env"]}
    store = settings_from_env(env).store()
    assert store.backend == "ducklake" and "sslmode=require" in store.catalog_dsn
    assert values["postgresql"]["postgresqlParams"] == {"sslmode": "require"}
