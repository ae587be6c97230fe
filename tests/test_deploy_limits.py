"""What a deployment gets from the repository: no known account from `make serve`, nginx's limit on the login routes."""

import asyncio
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.server import ROOT
from tests.support.wait import eventually_sync

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def dry_run(target: str) -> str:
    """The commands `make <target>` would run, without running them."""
    return subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout


def test_make_serve_creates_no_demo_user():
    """`make serve` ran create_demo_user: every deployment had a superuser demo/demo, its password reset on each start."""
    serve, run = dry_run("serve"), dry_run("run")
    assert "manage.py migrate" in serve and "create_demo_user" not in serve
    assert "create_demo_user" in run, "the local demo keeps its user"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def nginx(start_server, tmp_path):
    """deploy/nginx.conf as it is, on its own ports, in front of a test server."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (make system-deps)")
    server = start_server("sqlite")
    port = free_port()
    conf = (ROOT / "deploy/nginx.conf").read_text()
    conf = conf.replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("server 127.0.0.1:8001;", f"server 127.0.0.1:{server.port};")
    conf = re.sub(r"worker_processes \w+;", "worker_processes 1;", conf)
    (tmp_path / "nginx.conf").write_text(conf)
    (tmp_path / "temp").mkdir()
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    eventually_sync(listening, what="nginx to listen")
    yield f"http://127.0.0.1:{port}"
    process.send_signal(signal.SIGQUIT)
    process.wait(15)


async def test_nginx_limits_the_login_routes(nginx):
    """deploy/nginx.conf had no limit_req: a guesser's tries all reached the app's password hasher."""
    tries = 20
    async with httpx.AsyncClient(base_url=nginx, timeout=60) as http:
        started = asyncio.get_running_loop().time()
        answers = await asyncio.gather(
            *(http.post("/api/auth/token", json={"username": "nobody", "password": f"guess {n}"}) for n in range(tries))
        )
        elapsed = asyncio.get_running_loop().time() - started
        statuses = [answer.status_code for answer in answers]
        # One at once plus a burst of 5 pass, and one more a second while they arrive.
        assert statuses.count(401) <= 6 + int(elapsed) + 1, (statuses, elapsed)
        assert statuses.count(401) + statuses.count(429) == tries, statuses
        assert (await http.get("/api/models")).status_code == 401, "other routes are not held by the login limit"
