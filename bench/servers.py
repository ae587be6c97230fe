"""The servers the capacity benchmark loads: which they are, their code and databases, their processes.

Each server is a process (or, with workers, a supervisor and its workers)
pinned to given cores with taskset and measured from /proc. The project runs
from the working tree or, to compare with an earlier version in the same run,
from any commit (`git archive` into a temporary directory, next to this
bench/ package), each with a fresh copy of a migrated database.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.measure import HOST, children, cpu_seconds, free_port, status, wait_for_port
from tests.support.server import POSTGRES_ADMIN_URL, postgres_execute

ROOT = Path(__file__).resolve().parents[1]
# The template's users, each with a bearer token and conversations. Streams go to them in
# turn, so that no user passes the per-user limits (10 answers, 30 streams at once by default)
# and those limits' own costs are paid as in production, up to 2,000 streams.
USERS = 200
CONVERSATIONS_PER_USER = 8
# The servers log in to PostgreSQL as this role, which may hold this many connections: the
# PostgreSQL server is shared (max_connections 100), and a server that takes a connection per
# stream must fail alone, as it would against a production role's limit, not starve everyone.
POSTGRES_ROLE = "bench_capacity"
POSTGRES_ROLE_CONNECTIONS = 40


@dataclass(frozen=True)
class Spec:
    name: str
    app: str
    server: str = "uvicorn"  # or "daphne"
    project: bool = False
    coalesce_ms: int = 0
    args: tuple = ()
    workers: int = 1
    code: str = "worktree"  # or a commit: the project's code comes from there
    postgres: bool = False
    redis: bool = False
    model: str = ""  # the model the project answers with (CHAT_OPENAI_MODEL); "" for the default, text only

    @property
    def label(self) -> str:
        label = self.name if self.code == "worktree" else f"{self.name}@{self.code}"
        return f"{label}+{self.model}" if self.model else label


SPECS = {
    spec.name: spec
    for spec in [
        Spec("bare-sse", "bench.bare_sse:app"),
        Spec("bare-django", "bench.bare_django:app", args=("--lifespan", "off")),
        Spec("project-uvicorn", "bench.asgi:application", project=True),
        Spec("project-uvicorn-c48", "bench.asgi:application", project=True, coalesce_ms=48),
        # uvicorn picks uvloop when it is installed (uvicorn[standard]); this is the stock asyncio loop.
        Spec("project-uvicorn-asyncio", "bench.asgi:application", project=True, args=("--loop", "asyncio")),
        Spec("project-uvicorn-asyncio-c48", "bench.asgi:application", project=True, coalesce_ms=48,
             args=("--loop", "asyncio")),
        Spec("project-daphne", "bench.asgi:application", server="daphne", project=True),
        Spec("project-daphne-c48", "bench.asgi:application", server="daphne", project=True, coalesce_ms=48),
    ]
}


def scale_out_specs(code: str) -> list[Spec]:
    """The project on uvicorn with PostgreSQL and Redis: one process, then two workers behind one port."""
    one = replace(SPECS["project-uvicorn"], name="pg-redis-1-process", code=code, postgres=True, redis=True)
    return [one, replace(one, name="pg-redis-2-processes", workers=2)]


def code_tree(code: str) -> Path:
    """The directory the project's code runs from: the working tree, or a commit extracted once."""
    if code == "worktree":
        return ROOT
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{code}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = Path(tempfile.gettempdir()) / "bench-trees" / sha
    if not (tree / "manage.py").exists():
        partial = tree.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive, check=True)
        # This bench/ package serves every version, so that they are measured alike.
        shutil.rmtree(partial / "bench", ignore_errors=True)
        partial.rename(tree)
    return tree


def python_path(tree: Path) -> str:
    """The tree's own packages come first (it is the working directory); bench/ comes from here."""
    return os.pathsep.join(dict.fromkeys([str(tree), str(ROOT)]))


SETUP = f"""
import json
from django.contrib.auth.models import User
from django.db import transaction
from chat.api.auth import token_issue
from chat.models import Conversation
made = []
with transaction.atomic():  # One commit: a commit per row takes minutes on a busy disk.
    User.objects.bulk_create([User(username=f"bench{{i}}", password="!") for i in range({USERS})])
    users = list(User.objects.filter(username__startswith="bench").order_by("pk"))
    Conversation.objects.bulk_create(
        [Conversation(owner=user, title="bench") for user in users for _ in range({CONVERSATIONS_PER_USER})]
    )
    for user in users:
        key, _ = token_issue(user=user, name="bench")
        ids = Conversation.objects.filter(owner=user).order_by("pk").values_list("pk", flat=True)
        made.append({{"token": key, "conversations": list(ids)}})
print(json.dumps(made))
"""


@dataclass
class Database:
    url: str
    users: list[dict]  # {"token": bearer key, "conversations": [ids]}
    sqlite_path: str | None = None
    postgres_name: str | None = None


class Databases:
    """A migrated template per (code, backend), with the users, their tokens and conversations; a copy per server."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.templates: dict[tuple[str, bool], Database] = {}
        self.created: list[str] = []

    def template(self, spec: Spec) -> Database:
        key = (spec.code, spec.postgres)
        if key not in self.templates:
            tag = uuid.uuid4().hex[:8]
            if spec.postgres:
                name = f"bench_template_{tag}"
                ensure_postgres_role()
                postgres_execute(f'CREATE DATABASE "{name}" OWNER {POSTGRES_ROLE}')
                self.created.append(name)
                url = postgres_url(name)
            else:
                url = f"sqlite:///{self.workdir / f'template-{tag}.sqlite3'}"
            tree = code_tree(spec.code)
            env = {**clean_environ(), **django_env(url), "PYTHONPATH": python_path(tree)}
            for args in (["migrate", "--noinput"], ["shell", "-c", SETUP]):
                result = subprocess.run([sys.executable, "manage.py", *args], cwd=tree, env=env, capture_output=True, text=True)
                if result.returncode:
                    raise RuntimeError(f"manage.py {args[0]} failed in {tree}:\n{result.stdout}\n{result.stderr}")
            self.templates[key] = Database(url, json.loads(result.stdout.strip().splitlines()[-1]))
        return self.templates[key]

    def fresh(self, spec: Spec) -> Database:
        template = self.template(spec)
        tag = uuid.uuid4().hex[:8]
        if spec.postgres:
            name = f"bench_{tag}"
            postgres_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template.url.rsplit("/", 1)[1]}" OWNER {POSTGRES_ROLE}')
            self.created.append(name)
            return replace(template, url=postgres_url(name), postgres_name=name)
        path = self.workdir / f"db-{tag}.sqlite3"
        shutil.copy(template.url.removeprefix("sqlite:///"), path)
        return replace(template, url=f"sqlite:///{path}", sqlite_path=str(path))

    def discard(self, database: Database | None) -> None:
        if database is None:
            return
        if database.postgres_name:
            drop_postgres(database.postgres_name)
            self.created.remove(database.postgres_name)
        elif database.sqlite_path:
            for suffix in ("", "-wal", "-shm"):
                Path(database.sqlite_path + suffix).unlink(missing_ok=True)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            drop_postgres(name)
        self.created.clear()


def ensure_postgres_role() -> None:
    postgres_execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{POSTGRES_ROLE}') "
        f"THEN CREATE ROLE {POSTGRES_ROLE} LOGIN; END IF; END $$"
    )
    postgres_execute(f"ALTER ROLE {POSTGRES_ROLE} CONNECTION LIMIT {POSTGRES_ROLE_CONNECTIONS}")


def postgres_url(name: str) -> str:
    """The database as the servers' role sees it (trust authentication on 127.0.0.1, as the tests use)."""
    server = POSTGRES_ADMIN_URL.split("@", 1)[1].rsplit("/", 1)[0]
    return f"postgresql://{POSTGRES_ROLE}@{server}/{name}"


def drop_postgres(name: str) -> None:
    try:
        postgres_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # Left behind is better than a benchmark that dies while cleaning up.
        print(f"could not drop database {name}: {exc}", file=sys.stderr)


def set_autogroup_nice(pid: int | str, nice: int) -> int | None:
    """Set the priority of the process's session against other sessions; return the old one (None if unsupported).

    With autogroup scheduling (most Linux desktops and servers), a nice value
    counts only within its session: other sessions' work gets an equal share
    of the cores however low their priority is set.
    """
    path = Path(f"/proc/{pid}/autogroup")
    try:
        old = int(path.read_text().rsplit("nice", 1)[1])
        path.write_text(str(nice))
        return old
    except (OSError, IndexError, ValueError):
        return None


def clean_environ() -> dict:
    """This process's environment without the project's settings, so that only the benchmark's apply."""
    prefixes = ("CHAT_", "DJANGO_", "DATABASE_URL", "REDIS_URL", "DB_", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def django_env(database_url: str) -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SECRET_KEY": "bench-only-secret-key",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "HTTPS": "0",  # Plain http on 127.0.0.1: no redirect to https.
        "DATABASE_URL": database_url,
    }


def project_env(spec: Spec, database: Database, *, rate: float, tokens: int, redis_url: str) -> dict:
    """The project's settings for a run: its defaults, except the provider and what the load needs."""
    env = {
        **django_env(database.url),
        "CHAT_LLM_PROVIDER": "bench",
        "CHAT_SIMULATED_TOKENS_PER_S": str(rate),
        "CHAT_SIMULATED_MAX_TOKENS": str(tokens),
        "CHAT_SIMULATED_POINTS": str(tokens // 15 + 3),  # ~20 tokens a point: the answer is cut to `tokens`.
        # Idle streams wait on answers due in half an hour; a stall must not end them first.
        "CHAT_UPSTREAM_STALL_S": "3600",
        "CHAT_LOG_LEVEL": "WARNING",
    }
    if spec.redis:
        env["REDIS_URL"] = redis_url
    if spec.model:
        env["CHAT_OPENAI_MODEL"] = spec.model  # the one model of the "bench" provider, when CHAT_MODELS is unset
    return env


class CpuQuota:
    """A CPU cgroup per serving process, capped at `share` of a core (cgroup v1 or v2; needs root).

    With the cap, two processes on two cores can be set against one on this
    2-core machine and still leave the client, PostgreSQL and Redis a core.
    The period is short (10 ms), so that a process out of its quota waits
    milliseconds, not the default 100 ms period's tens, to go on.
    """

    PERIOD_US = 10_000

    def __init__(self, share: float, name: str):
        v1 = Path("/sys/fs/cgroup/cpu")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.root, self.v2 = v1, False
        elif "cpu" in Path("/sys/fs/cgroup/cgroup.controllers").read_text(errors="ignore").split():
            self.root, self.v2 = Path("/sys/fs/cgroup"), True
        else:
            raise RuntimeError("--cpu-quota needs a cgroup CPU controller under /sys/fs/cgroup")
        self.share, self.name, self.groups = share, name, []

    def cap(self, pid: int) -> None:
        group = self.root / f"{self.name}-{len(self.groups)}"
        group.mkdir()
        self.groups.append(group)
        quota = round(self.share * self.PERIOD_US)
        if self.v2:
            (group / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))  # Every thread, and the threads it starts later.

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the groups, once the processes in them have exited."""
        deadline = time.monotonic() + timeout
        for group in self.groups:
            while True:
                try:
                    group.rmdir()
                    break
                except OSError:  # EBUSY: a process is still in it.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        self.groups = []


@dataclass
class Server:
    """A benchmark server's process(es), pinned: `cpus[i]` is worker i's core (all of them for the supervisor)."""

    spec: Spec
    cpus: list[int]
    env: dict = field(default_factory=dict)
    workdir: Path = Path(tempfile.gettempdir())
    port: int = field(default_factory=free_port)
    nice: int = 0
    gc_log: Path | None = None  # Prefix of the files bench/gc_hook writes each collection to.
    cpu_quota: float | None = None  # Each serving process's cap, in cores (CpuQuota).
    quota: CpuQuota | None = None
    process: subprocess.Popen | None = None
    workers: list[int] = field(default_factory=list)

    def command(self) -> list[str]:
        if self.spec.server == "daphne":
            serve = ["-m", "daphne", "-b", HOST, "-p", str(self.port), self.spec.app]
        else:
            serve = ["-m", "uvicorn", "--host", HOST, "--port", str(self.port), "--log-level", "warning",
                     "--no-access-log", *self.spec.args]
            if self.spec.workers > 1:
                serve += ["--workers", str(self.spec.workers)]
            serve.append(self.spec.app)
        cores = ",".join(str(cpu) for cpu in sorted(set(self.cpus)))
        return ["taskset", "-c", cores, sys.executable, *serve]

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.spec.name}-{self.port}.log"

    def start(self) -> "Server":
        tree = code_tree(self.spec.code) if self.spec.project else ROOT
        env = {**clean_environ(), **self.env, "PYTHONPATH": python_path(tree), "PYTHONUNBUFFERED": "1"}
        if self.gc_log:
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench" / "gc_hook"), env["PYTHONPATH"]])
            env["BENCH_GC_LOG"] = str(self.gc_log)
        self.process = subprocess.Popen(
            self.command(), cwd=tree, env=env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,  # A Ctrl-C meant for the benchmark reaches the servers through stop() only.
        )
        # Its own session is its own autogroup, which the scheduler weighs against other sessions by this.
        set_autogroup_nice(self.process.pid, self.nice)
        try:
            wait_for_port(self.port, self.process)
            if self.spec.workers > 1:
                self.pin_workers()
            if self.cpu_quota:
                self.quota = CpuQuota(self.cpu_quota, f"bench-{self.port}")
                for pid in self.workers or [self.process.pid]:
                    self.quota.cap(pid)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.spec.label} did not start:\n{self.log()[-3000:]}") from None
        return self

    def pin_workers(self) -> None:
        """uvicorn's workers inherit the supervisor's cores; give each its own."""
        deadline = time.monotonic() + 30
        while len(self.workers) < self.spec.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected {self.spec.workers} workers, found {self.workers}")
            time.sleep(0.1)
            self.workers = [pid for pid in children(self.process.pid)
                            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        for pid, cpu in zip(self.workers, self.cpus):
            os.sched_setaffinity(pid, {cpu})

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *self.workers]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def status(self) -> dict:
        total = {"rss": 0, "peak_rss": 0, "threads": 0}
        for pid in self.pids:
            for key, value in status(pid).items():
                total[key] += value
        return total

    def stop(self, timeout: float = 5.0) -> float | None:
        """SIGINT, as Ctrl-C would; the seconds it took to exit, or None if it had to be killed."""
        try:
            if self.process is None or self.process.poll() is not None:
                return None
            started = time.monotonic()
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
                return time.monotonic() - started
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                return None
        finally:
            if self.quota:  # Also after a server that exited on its own.
                self.quota.remove()

    def collections(self, start: float, end: float) -> list[tuple[float, int, float]]:
        """(end time, generation, milliseconds) of each garbage collection that ended between start and end."""
        found = []
        for pid in self.pids:
            path = Path(f"{self.gc_log}.{pid}")
            if path.exists():
                for line in path.read_text().splitlines():
                    at, generation, ms = line.split()
                    if start <= float(at) <= end:
                        found.append((float(at), int(generation), float(ms)))
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
