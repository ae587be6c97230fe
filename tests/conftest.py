import os
from collections import OrderedDict

import pytest

from tests.support.client import ChatClient
from tests.support.server import (
    USERS,
    DatabaseTemplates,
    LiveServer,
    drop_templates,
    postgres_available,
    redis_available,
    stop_all,
)

REQUIRE_SERVICES = os.environ.get("CHAT_REQUIRE_SERVICES") == "1"


@pytest.hookimpl(tryfirst=True)  # Before xdist's own hook turns the groups into test ids.
def pytest_collection_modifyitems(items):
    """Under `--dist loadgroup` (make test), give each module to one worker.

    So the servers a module starts are started once, not once per worker.
    The browser tests share one worker: one Chromium at a time on the machine.
    """
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            group = "browser" if item.nodeid.startswith("tests/browser/") else item.module.__name__
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session):
    """Stop a parallel run whose modules are not grouped: a pytest or xdist upgrade can break it silently."""
    if getattr(session.config.option, "loadgroup", False) and any("@" not in i.nodeid for i in session.items):
        raise pytest.UsageError("--dist loadgroup does not group the tests by module (see the pytest pin in pyproject.toml)")


def shared_tmp(tmp_path_factory):
    """A folder that every xdist worker of this run sees (the run's own base folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def pytest_sessionfinish(session):
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # The run itself, not one of its workers.
        drop_templates(shared_tmp(session.config._tmp_path_factory))


@pytest.fixture(scope="session")
def database_templates(tmp_path_factory):
    templates = DatabaseTemplates(tmp_path_factory.mktemp("databases"), shared_tmp(tmp_path_factory))
    yield templates
    templates.drop_all()


def require_service(available: bool, message: str) -> None:
    """Skip a test whose service is missing, or fail it when CHAT_REQUIRE_SERVICES=1 (CI)."""
    if not available:
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}, and CHAT_REQUIRE_SERVICES=1")
        pytest.skip(message)


def require_backend(backend: str) -> None:
    if backend == "postgres":
        require_service(postgres_available(), "PostgreSQL is not reachable at 127.0.0.1:5432")


def require_redis() -> None:
    require_service(redis_available(), "Redis is not reachable at 127.0.0.1:6379")


# Servers a test asked for with fresh=True: its own, stopped when it ends, so that their
# database connections do not add up against PostgreSQL's limit over a session.
FRESH_SERVERS: list[LiveServer] = []
# Each server holds up to CHAT_DB_THREADS connections, and PostgreSQL allows 100 in all
# (to every parallel worker, and to whatever else runs on the machine): keep a few.
POSTGRES_SERVERS_KEPT = 3


@pytest.fixture(scope="session")
def start_server(database_templates, tmp_path_factory):
    """Start (or reuse) a Daphne server for a backend and a set of environment overrides.

    `fresh=True` gives the test a server (and database) of its own. Of the shared
    PostgreSQL servers, those least recently used stop when too many are running.
    """
    servers: OrderedDict[tuple, LiveServer] = OrderedDict()  # Least recently used first.
    users: dict[tuple, str] = {}  # The test that last used each server.
    workdir = tmp_path_factory.mktemp("servers")

    def start(backend: str = "sqlite", *, fresh: bool = False, **env) -> LiveServer:
        require_backend(backend)
        env = {key: str(value) for key, value in env.items()}
        key = (backend, tuple(sorted(env.items())))
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        if fresh or key not in servers or servers[key].process.poll() is not None:
            if backend == "postgres" and not fresh:
                make_room_for_postgres(test)
            server = LiveServer(database_url=database_templates.fresh(backend), env=env, workdir=workdir).start()
            if fresh:
                FRESH_SERVERS.append(server)
                return server
            servers[key] = server
        servers.move_to_end(key)
        users[key] = test
        return servers[key]

    def make_room_for_postgres(test: str) -> None:
        running = [key for key in servers if key[0] == "postgres"]
        idle = [key for key in running if users.get(key) != test]  # Never one the test holds.
        stop_all(servers.pop(key) for key in idle[: max(0, len(running) - POSTGRES_SERVERS_KEPT + 1)])

    yield start
    stop_all([*servers.values(), *FRESH_SERVERS])


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """After the test's own fixtures are torn down, stop the servers it had to itself."""
    stop_all(FRESH_SERVERS)
    FRESH_SERVERS.clear()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture
def server(start_server, backend):
    return start_server(backend)


@pytest.fixture
async def alice(server):
    async with ChatClient(server.url) as client:
        yield await client.login("alice", USERS["alice"])


@pytest.fixture
async def bob(server):
    async with ChatClient(server.url) as client:
        yield await client.login("bob", USERS["bob"])


@pytest.fixture
async def alice_api(server):
    """Alice as a mobile app: a bearer token, no session."""
    from tests.support.api import api_client

    async with api_client(server.url, "alice") as client:
        yield client


@pytest.fixture
async def bob_api(server):
    from tests.support.api import api_client

    async with api_client(server.url, "bob") as client:
        yield client
