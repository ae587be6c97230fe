"""A loopback HTTP proxy that adds `Authorization: Bearer <token>` to every request it forwards.

The conformance suite sends no credentials; behind this proxy it measures the
server with its real authentication on. Requests are framed (Content-Length
or chunked) so every request on a keep-alive connection gets the header;
responses pass through as raw bytes.
"""

import asyncio

from tests.support.loopback import LoopbackServer

READ_SIZE = 65536


class BearerProxy(LoopbackServer):
    thread_name = "bearer-proxy"

    def __init__(self, target_port: int, token: str):
        self.target = ("127.0.0.1", target_port)
        self.authorization = f"Authorization: Bearer {token}\r\n".encode()
        self.requests = 0
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _close_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        upstream = asyncio.ensure_future(self._requests(client_reader, server_writer))
        downstream = asyncio.ensure_future(self._pipe(server_reader, client_writer))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            for writer in (client_writer, server_writer):
                writer.transport.abort()
                self._writers.discard(writer)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.split(b"\r\n")
            kept, length, chunked = [lines[0]], 0, False
            for line in lines[1:-2]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"authorization":
                    continue  # Ours replaces whatever the client sent.
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                kept.append(line)
            self.requests += 1
            writer.write(b"\r\n".join(kept) + b"\r\n" + self.authorization + b"\r\n")
            if chunked:
                await self._forward_chunked(reader, writer)
            elif length:
                writer.write(await reader.readexactly(length))
            await writer.drain()

    @staticmethod
    async def _forward_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                return
            writer.write(await reader.readexactly(size + 2))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
