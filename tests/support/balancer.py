"""A TCP balancer on 127.0.0.1 for the tests: several web processes behind one port.

Each new connection goes to the next backend in turn that accepts it, as a
load balancer does with a node that stopped listening. The backends can be
changed while it runs: a rolling restart takes a process out, then puts its
successor in.
"""

import asyncio
import contextlib
from collections import Counter


class Balancer:
    def __init__(self, ports: list[int]):
        self.ports = list(ports)
        self.turn = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections: Counter = Counter()  # Per backend port.

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "Balancer":
        self.server = await asyncio.start_server(self.accept, "127.0.0.1", 0, backlog=512)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        # Closed, not cancelled: each connection's task then ends on its own.
        for writer in list(self.writers):
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.ports)):
            port = self.ports[self.turn % len(self.ports)]
            self.turn += 1
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
                self.connections[port] += 1
                return upstream
            except OSError:
                continue  # Not listening (stopping, or not started yet): the next one.
        return None

    async def accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())
        self.writers.add(client_writer)
        try:
            upstream = await self.connect()
            if upstream is None:
                return
            upstream_reader, upstream_writer = upstream
            self.writers.add(upstream_writer)
            try:
                # Either side closing ends the connection, as a proxy that sees a reset does.
                pipes = [
                    asyncio.ensure_future(pipe(client_reader, upstream_writer)),
                    asyncio.ensure_future(pipe(upstream_reader, client_writer)),
                ]
                try:
                    await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in pipes:
                        task.cancel()
            finally:
                upstream_writer.close()
                self.writers.discard(upstream_writer)
        finally:
            client_writer.close()
            self.writers.discard(client_writer)
            self.tasks.discard(asyncio.current_task())


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
