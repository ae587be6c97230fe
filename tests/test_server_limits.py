"""Idle and slow clients, and huge request heads, against the real servers (docs/deploy.md, "Idle and slow clients").

Daphne (Twisted) closes a connection that sends nothing for 60 s, whether it
never finished its headers or sits idle between requests (Twisted's fixed
request timeout; Daphne has no flag for it). A head over 16 KiB in total, or
over 500 header lines, gets a 400; a single line over 16 KiB is closed without
an answer. uvicorn closes an idle keep-alive connection after
--timeout-keep-alive and never times out a first request that never ends. Its
default parser (httptools, with uvicorn[standard]) takes a head of any size;
with `--http h11` it answers 400 to a head still incomplete past 16 KiB (h11's
limit on buffered bytes). nginx in front (deploy/nginx.conf) caps heads at 16 KiB.
"""

import socket
import time

import pytest

from tests.support.server import LiveServer

DAPHNE_IDLE_S = 60  # twisted.web.http's _REQUEST_TIMEOUT
UVICORN_KEEP_ALIVE_S = 1


def exchange(port: int, data: bytes, *, timeout: float = 10) -> tuple[bytes, float]:
    """Send `data`, read until the server closes; return what it sent and how long it kept the socket open."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received, time.monotonic() - started


def head(*lines: bytes) -> bytes:
    return b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(line + b"\r\n" for line in lines)


@pytest.fixture(scope="module")
def daphne(start_server):
    return start_server("sqlite")


@pytest.fixture(scope="module", params=["httptools", "h11"])
def uvicorn(request, start_server, tmp_path_factory):
    template = start_server("sqlite")
    server = LiveServer(
        database_url=template.database_url, env={}, workdir=tmp_path_factory.mktemp("uvicorn"), server="uvicorn"
    )
    server.command = [*server.command, "--timeout-keep-alive", str(UVICORN_KEEP_ALIVE_S), "--http", request.param]
    server.parser = request.param
    yield server.start()
    server.stop()


@pytest.mark.timeout(DAPHNE_IDLE_S + 60)
def test_daphne_closes_a_request_that_never_finishes_its_headers(daphne):
    received, held = exchange(daphne.port, head(b"X-Slow: 1"), timeout=DAPHNE_IDLE_S + 30)
    assert received == b"", "no answer to a request that never ended"
    assert held < DAPHNE_IDLE_S + 15, f"held for {held:.0f} s"


def test_daphne_answers_400_to_a_huge_head(daphne):
    lines = [b"X-Big-%d: %s" % (n, b"a" * 8000) for n in range(3)]
    received, _ = exchange(daphne.port, head(*lines) + b"\r\n")
    assert received.startswith(b"HTTP/1.1 400 ")
    received, _ = exchange(daphne.port, head(*(b"X-%d: a" % n for n in range(600))) + b"\r\n")
    assert received.startswith(b"HTTP/1.1 400 ")


def test_daphne_closes_a_single_over_long_line(daphne):
    received, _ = exchange(daphne.port, head(b"X-Big: " + b"a" * 17000) + b"\r\n")
    assert received == b"", "Twisted closes the connection without an answer"


def test_daphne_serves_a_large_but_allowed_head(daphne):
    received, _ = exchange(daphne.port, head(b"X-Big: " + b"a" * 12000, b"Connection: close") + b"\r\n")
    assert received.startswith(b"HTTP/1.1 200 ")


def test_uvicorn_closes_an_idle_keep_alive_connection(uvicorn):
    received, held = exchange(uvicorn.port, head() + b"\r\n", timeout=30)
    assert received.startswith(b"HTTP/1.1 200 "), received[:100]
    assert held < UVICORN_KEEP_ALIVE_S + 10, f"held for {held:.0f} s"


def test_uvicorn_head_limit_is_h11s_only(uvicorn):
    """h11 refuses a huge head; httptools parses it: the proxy in front must cap heads."""
    received, _ = exchange(uvicorn.port, head(b"X-Big: " + b"a" * 200_000, b"Connection: close") + b"\r\n")
    expected = b"HTTP/1.1 400 " if uvicorn.parser == "h11" else b"HTTP/1.1 200 "
    assert received.startswith(expected), received[:100]
