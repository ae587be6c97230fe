"""A fault-injecting TCP proxy on 127.0.0.1, for tests that break connections.

It sits between a client (a browser) and a server and, on demand:

- `cut()`: closes every live connection at once, mid-stream;
- `stall()`: holds the bytes the server sends on live connections (all, or
  those whose current request's line contains a path; and, if asked, on
  connections that send such a request later) until `release()`;
- `refuse()`: closes connections without forwarding them: the next N, or all
  requests whose request line contains a path, until `allow()`;
- `go_down()` / `come_back()` (or `with proxy.outage():`): a network outage:
  every open connection is aborted and every new one is refused at once,
  until the network comes back;
- `black_hole()` / `restore()` (or `with proxy.outage(black_hole=True):`): an
  outage that drops every packet, as after a switch of network: nothing is
  closed or refused, nothing is forwarded either way, and every connection
  open during it (accepted then, or open when it began) stays silent for
  good, even once the network is back. Only new connections work again.

It runs in a background thread with its own event loop, so sync tests
(Playwright) and async tests can both drive it:

    with FaultProxy(server.port) as proxy:
        page.goto(proxy.url)
        ...
        proxy.cut()

Requests from the client are framed (head plus Content-Length body) so that a
path rule applies to every request on a keep-alive connection, not only the
first; responses are forwarded as raw bytes.
"""

import asyncio
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.loopback import LoopbackServer

READ_SIZE = 65536

Paths = str | tuple[str, ...]


def matches(path: Paths, request_line: str) -> bool:
    """The request line contains `path`, or one of several ("" matches every line)."""
    return any(p in request_line for p in ((path,) if isinstance(path, str) else path))


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    stalled: bool = False
    dead: bool = False  # black-holed: nothing forwarded, ever again
    held: list[bytes] = field(default_factory=list)
    request_line: str = ""  # the latest request forwarded on this connection
    stall_path: Paths = ""  # stalled for a request containing this; "" stalls the whole connection

    def unstall(self) -> None:
        self.stalled = False
        held, self.held = self.held, []
        for data in held:
            self.client.write(data)

    def abort(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()


class FaultProxy(LoopbackServer):
    thread_name = "fault-proxy"

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self.port = port
        self.connections_accepted = 0
        self.cuts = 0
        self.refused: list[str] = []  # the request lines (or "<connection>") refused
        self.requests: list[str] = []  # every request line forwarded
        self._live: set[_Connection] = set()
        self._stall_new: Paths | None = None  # stall connections that send a request containing this
        self._refuse_count = 0
        self._refuse_path: Paths | None = None
        self._refuse_path_count: int | None = None
        self._down = False
        self._black_hole = False
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- Lifecycle ------------------------------------------------------------

    # --- Faults (called from the test's thread) --------------------------------

    def cut(self) -> int:
        """Close every live connection now; return how many were cut."""

        return self._call(self._abort_live())

    def stall(self, path: Paths = "", *, new_requests: bool = False) -> int:
        """Hold the server's bytes until `release()`; return how many connections were stalled.

        Stalls the live connections whose current request line contains
        `path`, or one of several (every live connection if it is empty); with `new_requests`,
        also every connection that sends such a request later. Naming a path
        keeps idle keep-alive connections, which the browser may reuse for
        its reconnect, out of it.
        """

        async def stall() -> int:
            self._stall_new = path if new_requests else None
            stalled = [c for c in self._live if matches(path, c.request_line)]
            for connection in stalled:
                connection.stalled, connection.stall_path = True, path
            return len(stalled)

        return self._call(stall())

    def release(self) -> None:
        """Forward every held byte and stop holding."""

        async def release() -> None:
            self._stall_new = None
            for connection in list(self._live):
                connection.unstall()

        self._call(release())

    def refuse(self, count: int | None = None, *, path: Paths | None = None) -> None:
        """Close connections without forwarding them.

        Without `path`: the next `count` new connections. With `path`: every
        request whose request line contains it, at most `count` of them if
        given (a browser may retry a refused request by itself, which uses
        one up).
        """

        async def refuse() -> None:
            if path is None:
                self._refuse_count = count or 0
            else:
                self._refuse_path, self._refuse_path_count = path, count

        self._call(refuse())

    def allow(self) -> None:
        """Stop refusing."""

        async def allow() -> None:
            self._refuse_count = 0
            self._refuse_path = self._refuse_path_count = None

        self._call(allow())

    def go_down(self) -> int:
        """The network goes down: abort every live connection, refuse every new one; return how many were cut."""

        async def down() -> int:
            self._down = True
            return await self._abort_live()

        return self._call(down())

    def come_back(self) -> None:
        """The network is back."""

        async def up() -> None:
            self._down = False

        self._call(up())

    def black_hole(self) -> int:
        """Drop every packet from now on, closing nothing; return how many open connections go silent for good."""

        async def drop() -> int:
            self._black_hole = True
            for connection in self._live:
                connection.dead = True
            return len(self._live)

        return self._call(drop())

    def restore(self) -> None:
        """The network is back for new connections; those open during the black hole stay silent."""

        async def restore() -> None:
            self._black_hole = False

        self._call(restore())

    @contextmanager
    def outage(self, *, black_hole: bool = False):
        """The network is down for the duration of the block: refusing, or (`black_hole`) dropping everything."""
        self.black_hole() if black_hole else self.go_down()
        try:
            yield self
        finally:
            self.restore() if black_hole else self.come_back()

    @property
    def down(self) -> bool:
        return self._down or self._black_hole

    def reset(self) -> None:
        """Back to a clean pipe: the network up, stalls released, nothing refused."""
        self.come_back()
        self.restore()
        self.release()
        self.allow()

    @property
    def live_connections(self) -> int:
        return len(self._live)

    # --- The event loop side -------------------------------------------------------

    async def _abort_live(self) -> int:
        live = list(self._live)
        for connection in live:
            connection.abort()
        self.cuts += len(live)
        return len(live)

    async def _close_connections(self) -> None:
        for connection in list(self._live):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        if self._down:
            self.refused.append("<outage>")
            client_writer.transport.abort()
            return
        if self._refuse_count > 0:
            self._refuse_count -= 1
            self.refused.append("<connection>")
            client_writer.transport.abort()
            return
        connection = _Connection(client=client_writer, dead=self._black_hole)
        self._live.add(connection)
        self._tasks.add(asyncio.current_task())
        try:
            server_reader, connection.server = await asyncio.open_connection(*self.target)
            upstream = asyncio.ensure_future(self._requests(client_reader, connection))
            downstream = asyncio.ensure_future(self._responses(server_reader, connection))
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            for task in (upstream, downstream):
                task.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # a refused upstream, or the proxy shutting down: the connection just closes
        finally:
            connection.abort()
            self._live.discard(connection)
            self._tasks.discard(asyncio.current_task())

    def _refuses(self, request_line: str) -> bool:
        if self._refuse_path is None or not matches(self._refuse_path, request_line):
            return False
        if self._refuse_path_count is not None:
            if self._refuse_path_count <= 0:
                return False
            self._refuse_path_count -= 1
        return True

    async def _requests(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        """Forward the client's requests one by one, refusing those that match a rule."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            if connection.dead:
                continue  # dropped, as is everything else on this connection
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
                elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if self._refuses(request_line):
                self.refused.append(request_line)
                return  # the caller aborts both sides
            self.requests.append(request_line)
            connection.request_line = request_line
            if connection.stalled and connection.stall_path and not matches(connection.stall_path, request_line):
                connection.unstall()  # a reused keep-alive connection: the stall was for its earlier request
            if self._stall_new is not None and matches(self._stall_new, request_line):
                connection.stalled, connection.stall_path = True, self._stall_new
            body = await reader.readexactly(length) if length else b""
            connection.server.write(head + body)
            if chunked:
                # Browsers do not send chunked bodies for our requests; pass the rest through raw.
                while data := await reader.read(READ_SIZE):
                    connection.server.write(data)
                return

    async def _responses(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        while data := await reader.read(READ_SIZE):
            if connection.dead:
                continue
            if connection.stalled:
                connection.held.append(data)
            else:
                connection.client.write(data)
                await connection.client.drain()
