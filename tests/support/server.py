"""Real servers for the tests: Daphne in a subprocess on 127.0.0.1, with its own database."""

import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.wait import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get("CHAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
USERS = {"alice": "alice-password", "bob": "bob-password"}

# Fast, deterministic defaults for tests; each test's server may override them.
TEST_ENV = {
    "DJANGO_SETTINGS_MODULE": "project.settings",
    "SECRET_KEY": "test-only-secret-key",
    # The test servers serve plain http on 127.0.0.1: no HTTPS redirect, no secure-only cookies.
    "HTTPS": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "CHAT_LLM_PROVIDER": "simulated",
    "CHAT_SIMULATED_TOKENS_PER_S": "200",
    "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": "0.05",
    "CHAT_STREAM_IDLE_CHECK_S": "0.5",
    "CHAT_HEARTBEAT_S": "0.5",
    # Load tests and benchmarks run many answers for one user; test_limits.py sets its own.
    "CHAT_MAX_ACTIVE_GENERATIONS_PER_USER": "100000",
    "CHAT_MAX_STREAMS_PER_USER": "0",
    # Parallel test workers each run several servers on one PostgreSQL (max_connections 100).
    "CHAT_DB_THREADS": "3",
    # A stopped or killed server's answers end interrupted, as the tests of shutdown and of the reaper
    # expect; tests/test_restart.py turns continuing them after a restart on.
    "CHAT_RESUME_INTERRUPTED_MAX_AGE_S": "0",
    # Admission by load is tested on its own (test_admission.py): a busy CI machine must not trip it.
    "CHAT_OVERLOAD_LAG_MS": "0",
    "CHAT_OVERLOAD_START_MS": "0",
    "PYTHONUNBUFFERED": "1",
}


def manage(*args: str, env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


CREATE_USERS = "from django.contrib.auth.models import User\n" + "\n".join(
    f"User.objects.create_user({name!r}, password={password!r})" for name, password in USERS.items()
)


# Asked once per process: asked before every test, a loaded machine (or a PostgreSQL at its
# connection limit for a moment) made a few tests skip, or fail under CHAT_REQUIRE_SERVICES=1.
@functools.cache
def postgres_available() -> bool:
    import psycopg

    def connects() -> bool:
        try:
            with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=5):
                return True
        except psycopg.Error:
            return False

    try:
        return eventually_sync(connects, what="PostgreSQL", timeout=10, interval=1)
    except AssertionError:
        return False


REDIS_URL = "redis://127.0.0.1:6379/0"


@functools.cache
def redis_available() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=10).close()
        return True
    except OSError:
        return False


def query(database_url: str, sql: str, *params) -> list[dict]:
    """Rows of a server's database, read with no server in between; `%s` placeholders, UUIDs as uuid.UUID."""
    if database_url.startswith("sqlite:///"):
        import sqlite3
        from contextlib import closing

        # Django keeps a UUID in SQLite as 32 hex digits.
        params = tuple(p.hex if isinstance(p, uuid.UUID) else p for p in params)
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql.replace("%s", "?"), params)]
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as connection:
        return connection.execute(sql, params).fetchall()


def postgres_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql)


class DatabaseTemplates:
    """Migrate a database (with the test users) once per backend; copy it for every server.

    Parallel test workers share the templates through `shared`, a folder they
    all see: the first worker to need one makes it, under a file lock. The
    process that ran the workers drops them at the end (`drop_templates`).
    Without `shared` (a benchmark, say) the templates are this object's own.
    """

    def __init__(self, workdir: Path, shared: Path | None = None):
        self.workdir = workdir
        self.owns_templates = shared is None
        shared = shared or workdir
        self.index = shared / "templates.json"
        self.lock = shared / "templates.lock"
        self.templates: dict[str, str] = {}
        self.postgres_databases: list[str] = []

    def template(self, backend: str) -> str:
        if backend not in self.templates:
            with open(self.lock, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                made = json.loads(self.index.read_text()) if self.index.exists() else {}
                if backend not in made:
                    made[backend] = make_template(backend, self.index.parent)
                    self.index.write_text(json.dumps(made))
            self.templates[backend] = made[backend]
        return self.templates[backend]

    def fresh(self, backend: str) -> str:
        template = self.template(backend)
        if backend == "sqlite":
            path = self.workdir / f"db-{uuid.uuid4().hex[:8]}.sqlite3"
            shutil.copy(template.removeprefix("sqlite:///"), path)
            return f"sqlite:///{path}"
        name = f"chat_test_{uuid.uuid4().hex[:8]}"
        postgres_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template.rsplit("/", 1)[1]}"')
        self.postgres_databases.append(name)
        return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        """Drop the PostgreSQL databases this process copied, and the templates if they are its own."""
        for name in reversed(self.postgres_databases):
            drop_postgres_database(name)
        if self.owns_templates:
            drop_templates(self.index.parent)


def make_template(backend: str, folder: Path) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'template.sqlite3'}"
    else:
        name = f"chat_template_{uuid.uuid4().hex[:8]}"
        postgres_execute(f'CREATE DATABASE "{name}"')
        url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    env = {**TEST_ENV, "DATABASE_URL": url}
    manage("migrate", "--noinput", env=env)
    manage("shell", "-c", CREATE_USERS, env=env)
    return url


def drop_templates(shared: Path) -> None:
    index = shared / "templates.json"
    if index.exists() and (url := json.loads(index.read_text()).get("postgres")):
        drop_postgres_database(url.rsplit("/", 1)[1])


def drop_postgres_database(name: str) -> None:
    try:
        postgres_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception:
        pass  # PostgreSQL went away: nothing to clean.


# Daphne gets a socket already bound and listening (`--fd`), so no other process,
# such as a parallel test worker, can take its port between choosing and binding it.
# uvicorn's --fd takes any socket for a Unix one, so it binds the port itself.
SERVER_COMMANDS = {
    "daphne": ["-m", "daphne", "--fd", "{fd}", "project.asgi:application"],
    "uvicorn": ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning", "project.asgi:application"],
}
# What Daphne logs once it has loaded the app and serves the socket.
DAPHNE_LISTENING = "Listening on TCP address"


def restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LiveServer:
    """Daphne (or uvicorn) serving project.asgi on a free port of 127.0.0.1."""

    def __init__(
        self,
        *,
        database_url: str,
        env: dict,
        workdir: Path,
        server: str = "daphne",
        listener: socket.socket | None = None,
        port: int = 0,
    ):
        """`listener`: a listening socket to serve instead of a new one on 127.0.0.1 (Daphne only),
        such as one made in a network namespace (tests/support/netns.py); `port`: the port of a new one."""
        self.kind = server
        self.command = list(SERVER_COMMANDS[server])
        self.database_url = database_url
        self.workdir = workdir
        self.env = {**os.environ, **TEST_ENV, **env, "DATABASE_URL": database_url}
        self.listener = listener or socket.create_server(("127.0.0.1", port), backlog=512)
        # Twisted requires an adopted socket to be non-blocking: on a blocking one its
        # accept loop would block the whole server until the next connection came.
        self.listener.setblocking(False)
        host, self.port = self.listener.getsockname()[:2]
        self.url = f"http://{host}:{self.port}"
        # Unique: a port freed by a stopped server may be handed out again.
        self.log_path = workdir / f"{server}-{self.port}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "LiveServer":
        fd = self.listener.fileno()
        if self.kind != "daphne":
            self.listener.close()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *(arg.format(fd=fd, port=self.port) for arg in self.command)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[fd] if self.kind == "daphne" else [],
                # A suite started in the background by a shell (`make test &`) ignores SIGINT, and so would
                # the server: Python and Twisted install no handler then, and Daphne would never stop on it.
                preexec_fn=restore_sigint,
            )
        self.listener.close()  # The server process holds the socket now.
        try:
            eventually_sync(self.ready, what=f"{self.kind} on port {self.port} to serve", timeout=timeout)
        except AssertionError as error:
            self.stop()
            raise RuntimeError(f"{error}:\n{self.log()}") from None
        return self

    def ready(self) -> bool:
        """Daphne says so in its log, which leaves the first request to the test; uvicorn is quiet, so ask it."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.kind} exited early:\n{self.log()}")
        if self.kind == "daphne":
            return DAPHNE_LISTENING in self.log()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def successor(self) -> "LiveServer":
        """A server (not started) on this one's port and database, for after it stopped: a restart."""
        server = LiveServer(database_url=self.database_url, env={}, workdir=self.workdir, server=self.kind, port=self.port)
        server.env = self.env
        return server

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        self.signal(sig)
        return self.wait(timeout)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int | None:
        """The exit status, once the process has exited; killed if it takes longer than `timeout`."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stop_all(servers) -> None:
    """Stop servers side by side: each takes a moment to shut down."""
    servers = list(servers)
    for server in servers:
        server.signal()
    for server in servers:
        server.wait()
