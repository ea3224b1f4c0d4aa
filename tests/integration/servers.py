"""Real servers for integration tests, on 127.0.0.1 only: PostgreSQL (Debian binaries) and moto's S3.

Both are started by session fixtures (see ``postgres_server`` and ``s3_server``) and torn down at the end
of the session. Nothing listens on anything but loopback.

The PostgreSQL password lives in an environment variable that is set when this module is imported,
that is while pytest collects the tests and before any fixture has started Ray: Ray workers inherit the
environment of the process that started Ray, and the SQL read runs in a worker.
"""

from __future__ import annotations

import csv
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# ------------------------------------------------------------------------------------- helpers
PG_PASSWORD_ENV = "RAYMLOPS_TEST_PG_PASSWORD"
# Set at import (collection) time, before ray_session can start Ray, so Ray's workers inherit it.
PG_PASSWORD = os.environ.setdefault(PG_PASSWORD_ENV, "pw-" + secrets.token_hex(12))
PG_REQUIRE_ENV = "RAYMLOPS_REQUIRE_POSTGRES"
PG_MISSING_MESSAGE = "PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql"

S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"

# pyarrow's S3 client must never wander off to the EC2 metadata service or a user's ~/.aws.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the caller retries if someone takes it meanwhile); on
    loopback, outside the ephemeral range (``tests.helpers.free_port``)."""
    if host == "127.0.0.1":
        from tests.helpers import free_port as loopback_port

        return loopback_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_port(host: str, port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s")


# ------------------------------------------------------------------------------------ PostgreSQL
@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    password_env: str
    dbname: str = "postgres"

    @property
    def url(self) -> str:
        """The URL a raymlops SQL source uses (no password: it comes from ``password_env``)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def connect(self):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=self.dbname, connect_timeout=10)


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, or None."""
    candidates = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bin_dir = Path(initdb).parent
        if (bin_dir / "pg_ctl").is_file():
            version = bin_dir.parent.name
            candidates.append((int(version) if version.isdigit() else 0, bin_dir))
    return max(candidates)[1] if candidates else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` OS user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], what: str, timeout: float = 120) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                           f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")


@dataclass
class _PgCluster:
    bin_dir: Path
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def init(self, password: str) -> None:
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root but there is no 'postgres' OS user to run the server "
                                   "(apt-get install postgresql creates it)") from None
            uid, gid = pw.pw_uid, pw.pw_gid
        else:
            uid, gid = os.getuid(), os.getgid()
        (self.root / "sock").mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        for path in (self.root, self.root / "sock", pwfile):
            os.chown(path, uid, gid)
        _run(_as_postgres([str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "scram-sha-256",
                           f"--pwfile={pwfile}", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
                           "--no-instructions"]), "initdb")
        pwfile.unlink()

    def start(self, port: int) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {self.root / 'sock'} -c timezone=UTC "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        _run(_as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                           "-o", options, "-w", "-t", "60", "start"]), f"pg_ctl start on port {port}")

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                                     "-w", "-t", "60", "stop"]), capture_output=True, timeout=90)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"


FLIGHTS_DDL = """
CREATE TABLE flights (
    year integer, month integer, day integer, sched_dep_time integer, sched_arr_time integer,
    carrier text, flight integer, tailnum text, origin text, dest text, distance double precision,
    hour integer, minute integer, time_hour timestamptz, arr_delay double precision,
    cancelled boolean, delayed integer
)
"""


def load_flights(server: PostgresServer, csv_path: Path, table: str = "flights") -> int:
    """Create ``table`` and COPY the flights CSV into it; returns the row count."""
    with open(csv_path, newline="") as f:
        header = next(csv.reader(f))
    expected = ["year", "month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight", "tailnum",
                "origin", "dest", "distance", "hour", "minute", "time_hour", "arr_delay", "cancelled", "delayed"]
    assert header == expected, f"flights CSV columns changed: {header}"
    conn = server.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(FLIGHTS_DDL.replace("TABLE flights", f"TABLE {table}"))
            with open(csv_path, "rb") as f:
                cur.copy_expert(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)", f)
            cur.execute(f"SELECT count(*) FROM {table}")
            return cur.fetchone()[0]
    finally:
        conn.close()


def _start_postgres(bin_dir: Path) -> tuple[_PgCluster, PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="raymlops-pg-"))  # under /tmp: traversable by the postgres user
    cluster = _PgCluster(bin_dir=bin_dir, root=root)
    try:
        cluster.init(PG_PASSWORD)
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between choosing and binding: try another
            port = free_port()
            try:
                cluster.start(port)
            except RuntimeError as exc:
                last = exc
                continue
            server = PostgresServer(host="127.0.0.1", port=port, user="postgres", password=PG_PASSWORD,
                                    password_env=PG_PASSWORD_ENV)
            return cluster, server
        raise RuntimeError(f"{last}\nserver log:\n{cluster.log_tail()}")
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 (free port, scram-sha-256), with the smoke flights loaded."""
    from tests.helpers import SMOKE_FLIGHTS

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.environ.get(PG_REQUIRE_ENV) == "1":
            pytest.fail(f"{PG_REQUIRE_ENV}=1 but {PG_MISSING_MESSAGE}", pytrace=False)
        pytest.skip(PG_MISSING_MESSAGE)
    os.environ[PG_PASSWORD_ENV] = PG_PASSWORD  # already set at import; repeated in case a test removed it
    cluster, server = _start_postgres(bin_dir)
    try:
        rows = load_flights(server, SMOKE_FLIGHTS)
        assert rows == 3000, f"loaded {rows} flights, expected 3,000"
        yield server
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


# ------------------------------------------------------------------------------------- moto S3
@dataclass(frozen=True)
class S3Server:
    host: str
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def storage_options(self) -> dict[str, str]:
        """What a raymlops file source passes to ``pyarrow.fs.S3FileSystem``."""
        return {"endpoint_override": f"{self.host}:{self.port}", "scheme": "http",
                "access_key": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY, "region": S3_REGION}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=S3_ACCESS_KEY,
                            aws_secret_access_key=S3_SECRET_KEY, region_name=S3_REGION)

    def new_bucket(self, prefix: str = "raymlops-test") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in a thread of this process, on 127.0.0.1 and a free port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _wait_for_port("127.0.0.1", port)
        yield S3Server(host="127.0.0.1", port=port)
    finally:
        server.stop()


# ------------------------------------------------------------------------- MLflow tracking server
@dataclass(frozen=True)
class MlflowServer:
    url: str
    backend_uri: str
    artifacts: Path
    log: Path


def start_mlflow_server(postgres: PostgresServer, root: Path, database: str = "mlflow", port: int | None = None,
                        fresh: bool = True) -> tuple[subprocess.Popen, MlflowServer]:
    """`mlflow server` on 127.0.0.1 with a PostgreSQL backend store, as README's cluster set-up runs it.

    ``fresh=False`` with the same ``port`` and ``root`` restarts a stopped server on its existing store."""
    import sys

    if fresh:
        conn = postgres.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database}")
            cur.execute(f"CREATE DATABASE {database}")
        conn.close()
    # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the driver installed here is psycopg2.
    backend = f"postgresql+psycopg2://{postgres.user}:{postgres.password}@{postgres.host}:{postgres.port}/{database}"
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "mlflow-server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", (root / "artifacts").as_uri()],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(url=f"http://127.0.0.1:{port}", backend_uri=backend, artifacts=root / "artifacts", log=log)
    deadline = time.monotonic() + 120
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, server
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server not healthy after 120 s: {log.read_text()[-3000:]}")


def stop_process_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def mlflow_server(postgres_server, tmp_path_factory):
    """`mlflow server` on PostgreSQL for one test module (a fresh database each time)."""
    proc, server = start_mlflow_server(postgres_server, tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop_process_group(proc)
