"""The fault-injecting proxy that the browser tests put in front of the server does what it says."""

import asyncio

import pytest

from tests.support.proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)
# How long to wait for bytes that must come: only a failing test waits this long.
PATIENCE_S = 10


class TickServer:
    """HTTP/1.1 on 127.0.0.1: `/ticks` streams a line every 20 ms; anything else answers `ok` (keep-alive)."""

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1]
                if path == b"/ticks":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
                    for n in range(1000):
                        writer.write(b"tick %d\n" % n)
                        await writer.drain()
                        await asyncio.sleep(0.02)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def request(port: int, path: str, reader_writer=None):
    reader, writer = reader_writer or await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_ok(reader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE_S)
    return head + await asyncio.wait_for(reader.readexactly(2), PATIENCE_S)


@pytest.fixture
async def upstream():
    async with TickServer() as server:
        yield server


@pytest.fixture
def proxy(upstream):
    with FaultProxy(upstream.port) as proxy:
        yield proxy


async def test_forwards_requests_and_responses(proxy):
    reader, writer = await request(proxy.port, "/a")
    assert (await read_ok(reader)).endswith(b"ok")
    await request(proxy.port, "/b", (reader, writer))  # a second request on the same connection
    assert (await read_ok(reader)).endswith(b"ok")
    assert proxy.requests[-2:] == ["GET /a HTTP/1.1", "GET /b HTTP/1.1"]
    writer.close()


async def test_cut_closes_live_connections_mid_stream(proxy):
    reader, writer = await request(proxy.port, "/ticks")
    await asyncio.wait_for(reader.readuntil(b"tick 2\n"), PATIENCE_S)
    assert await asyncio.to_thread(proxy.cut) == 1
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        while await asyncio.wait_for(reader.read(65536), PATIENCE_S):
            pass
        raise ConnectionResetError("closed")
    writer.close()


async def test_stall_holds_bytes_until_release(proxy):
    reader, writer = await request(proxy.port, "/ticks")
    await asyncio.wait_for(reader.readuntil(b"tick 1\n"), PATIENCE_S)
    assert await asyncio.to_thread(proxy.stall, "/ticks") == 1
    while True:  # Drain the bytes already in flight.
        try:
            await asyncio.wait_for(reader.read(65536), 0.15)
        except TimeoutError:
            break  # silence: the bytes are held
    await asyncio.to_thread(proxy.release)
    assert await asyncio.wait_for(reader.read(65536), PATIENCE_S)
    writer.close()


async def test_stall_of_a_path_spares_other_connections(proxy):
    ticks, ticks_writer = await request(proxy.port, "/ticks")
    await asyncio.wait_for(ticks.readuntil(b"tick 0\n"), PATIENCE_S)
    other, other_writer = await request(proxy.port, "/other")
    await read_ok(other)
    await asyncio.to_thread(proxy.stall, "/ticks", new_requests=True)
    # A new request on the idle keep-alive connection still flows...
    await request(proxy.port, "/again", (other, other_writer))
    assert (await read_ok(other)).endswith(b"ok")
    # ...while a new /ticks request is held.
    held, held_writer = await request(proxy.port, "/ticks")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(held.read(1), 0.3)
    for writer in (ticks_writer, other_writer, held_writer):
        writer.close()


async def test_refuse_a_path_closes_only_matching_requests(proxy):
    await asyncio.to_thread(proxy.refuse, path="/ticks")
    reader, writer = await request(proxy.port, "/ticks")
    assert await asyncio.wait_for(reader.read(65536), PATIENCE_S) == b""
    writer.close()
    reader, writer = await request(proxy.port, "/fine")
    assert (await read_ok(reader)).endswith(b"ok")
    assert proxy.refused == ["GET /ticks HTTP/1.1"]
    await asyncio.to_thread(proxy.allow)
    await request(proxy.port, "/ticks", (reader, writer))
    assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE_S)
    writer.close()


async def test_refuse_the_next_n_connections(proxy):
    await asyncio.to_thread(proxy.refuse, 2)
    for _ in range(2):
        reader, writer = await request(proxy.port, "/a")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(reader.read(65536), PATIENCE_S)
            if not data:
                raise ConnectionResetError("closed")
        writer.close()
    reader, writer = await request(proxy.port, "/a")
    assert (await read_ok(reader)).endswith(b"ok")
    assert proxy.refused == ["<connection>", "<connection>"]
    writer.close()


async def silent_for(reader, seconds: float) -> bool:
    """Nothing arrives (and the connection stays open) for `seconds`, after draining what was in flight."""
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while loop.time() - quiet_since < seconds:
        try:
            data = await asyncio.wait_for(reader.read(65536), seconds)
        except TimeoutError:
            return True
        if not data:
            return False  # closed: not a black hole
        quiet_since = loop.time()  # in flight before the black hole began
    return True


async def test_a_black_hole_drops_everything_and_its_connections_stay_silent(proxy):
    """As after a switch of network: nothing closes, nothing arrives, and the old connections never recover."""
    old_reader, old_writer = await request(proxy.port, "/ticks")
    await asyncio.wait_for(old_reader.readuntil(b"tick 1\n"), PATIENCE_S)
    idle_reader, idle_writer = await request(proxy.port, "/a")  # a pooled keep-alive connection
    await read_ok(idle_reader)
    assert await asyncio.to_thread(proxy.black_hole) == 2
    assert proxy.down
    during_reader, during_writer = await request(proxy.port, "/a")  # opened during the outage
    assert await silent_for(old_reader, 0.3) and await silent_for(during_reader, 0.3)

    await asyncio.to_thread(proxy.restore)
    await request(proxy.port, "/b", (idle_reader, idle_writer))  # reused after the outage: no answer
    assert await silent_for(idle_reader, 0.3) and await silent_for(old_reader, 0.3)
    assert await silent_for(during_reader, 0.3)
    fresh_reader, fresh_writer = await request(proxy.port, "/a")
    assert (await read_ok(fresh_reader)).endswith(b"ok"), "a new connection works again"
    assert "GET /b HTTP/1.1" not in proxy.requests, "nothing on a dead connection reached the server"
    for writer in (old_writer, idle_writer, during_writer, fresh_writer):
        writer.close()
