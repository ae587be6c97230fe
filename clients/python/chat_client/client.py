"""The API client: async (`AsyncChatClient`) and blocking (`ChatClient`, the same code on a private event loop)."""

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager

import httpx

from .errors import ApiError, AttemptFailed, ChatError, error_from_response
from .events import Event, Posted, StateChange
from .retry import DEFAULT_BACKOFF_BASE_S, Config, retry_delay
from .stream import Answer, AnswerStream, PostRequest

NEWEST = object()  # parent_id left out: the message follows the conversation's newest message
# A non-streaming post waits for the whole answer, up to the server's CHAT_NONSTREAM_TIMEOUT_S (300 s).
NONSTREAM_TIMEOUT_S = 330.0


class AsyncChatClient:
    """The server's JSON API and its answer streams, with a bearer token.

    `config` and `transport` ("sse" or "ws") are the defaults of every stream it follows.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        config: Config | None = None,
        transport: str = "sse",
        timeout: float = 30.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.config = config or Config()
        self.transport = transport
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        # Streams, and every request made to recover one, open a new connection: after a network
        # switch a pooled keep-alive connection may be dead without knowing it.
        self._fresh = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0)
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._fresh.aclose()

    async def __aenter__(self) -> "AsyncChatClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def ws_url(self, path: str) -> str:
        return "ws" + self.base_url.removeprefix("http") + path

    def _headers(self, extra: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}

    async def _json(self, method: str, path: str, *, http: httpx.AsyncClient | None = None, headers=None, **kwargs):
        response = await (http or self._http).request(method, path, headers=self._headers(headers), **kwargs)
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.json() if response.content else None

    async def _fresh_json(self, method: str, path: str, **kwargs):
        return await self._json(method, path, http=self._fresh, timeout=self.config.stall_s, **kwargs)

    @asynccontextmanager
    async def _stream_request(self, method: str, path: str, headers: dict, **kwargs):
        stall = httpx.Timeout(self.config.stall_s)  # connect, and then every read: no byte for this long is a stall
        async with self._fresh.stream(method, path, headers=self._headers(headers), timeout=stall, **kwargs) as response:
            yield response

    # --- Auth -------------------------------------------------------------------------

    async def login(self, username: str, password: str, *, name: str | None = None) -> dict:
        """Exchange a username and password for a bearer token, which this client then uses.

        Returns `{"token", "expires_at"}`; keep the token somewhere safe, it is shown once.
        """
        body = {"username": username, "password": password, **({"name": name} if name else {})}
        response = await self._http.post("/api/auth/token", json=body)
        if response.status_code != 201:
            raise error_from_response(response)
        issued = response.json()
        self.token = issued["token"]
        return issued

    async def logout(self) -> None:
        """Revoke this client's token: it stops working at once."""
        await self._json("DELETE", "/api/auth/token")
        self.token = None

    # --- Conversations and messages -----------------------------------------------------

    async def conversations(self, *, q: str | None = None, limit: int | None = None) -> list[dict]:
        """Your conversations, most recently active first (all of them, or the first `limit`)."""
        return await self._pages("/api/conversations", {"q": q} if q else {}, limit)

    async def create_conversation(self, title: str | None = None) -> dict:
        return await self._json("POST", "/api/conversations", json={"title": title} if title else {})

    async def messages(self, conversation_id: int, *, limit: int | None = None) -> list[dict]:
        """A conversation's messages, every branch, oldest first."""
        return await self._pages(f"/api/conversations/{conversation_id}/messages", {}, limit)

    async def _pages(self, path: str, params: dict, limit: int | None) -> list[dict]:
        items: list[dict] = []
        cursor = None
        while limit is None or len(items) < limit:
            page = await self._json("GET", path, params={**params, **({"cursor": cursor} if cursor else {})})
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items if limit is None else items[:limit]

    async def models(self) -> list[dict]:
        return (await self._json("GET", "/api/models"))["items"]

    async def generation(self, generation_id: str) -> dict:
        """A generation: status, the text so far, last_seq, usage, timings."""
        return await self._json("GET", f"/api/generations/{generation_id}")

    async def cancel(self, generation_id: str) -> dict:
        """Stop a generation (idempotent); a stream following it then ends `cancelled`."""
        return await self._json("POST", f"/api/generations/{generation_id}/cancel")

    async def regenerate(self, generation_id: str, *, model: str | None = None, idempotency_key: str | None = None) -> dict:
        """A new answer to the same user message, beside the old one; `{"message", "generation"}`."""
        body = {"model": model} if model else {}
        key = idempotency_key or str(uuid.uuid4())
        return await self.post_message_with_key(PostRequest(f"/api/generations/{generation_id}/regenerate", body, key))

    def _message(self, conversation_id: int, content: str, *, stream: bool, model, response_format, parent_id, key) -> PostRequest:
        body: dict = {"content": content, "stream": stream}
        if model:
            body["model"] = model
        if response_format:
            body["response_format"] = response_format
        if parent_id is not NEWEST:
            body["parent_id"] = parent_id
        return PostRequest(f"/api/conversations/{conversation_id}/messages", body, key or str(uuid.uuid4()))

    async def post_message(
        self,
        conversation_id: int,
        content: str,
        *,
        stream: bool = True,
        model: str | None = None,
        response_format: str | None = None,
        parent_id=NEWEST,
        idempotency_key: str | None = None,
    ) -> dict:
        """Post a user message; `{"message", "generation"}`. With `stream=False` it waits for the whole
        answer (`generation.text`): the non-streaming fallback. A timeout, a dropped connection or a 5xx
        is retried with the same idempotency key, so the server creates the message once."""
        request = self._message(
            conversation_id, content, stream=stream, model=model, response_format=response_format, parent_id=parent_id, key=idempotency_key
        )
        return await self.post_message_with_key(request)

    async def post_message_with_key(self, request: PostRequest) -> dict:
        """POST `request.body` with its Idempotency-Key, retried (same key, same body) on what a retry can fix."""
        timeout = self._http.timeout if request.body.get("stream", True) else NONSTREAM_TIMEOUT_S
        headers = {"Idempotency-Key": request.key}
        failures = 0
        while True:
            try:
                return await self._json("POST", request.path, http=self._fresh, headers=headers, json=request.body, timeout=timeout)
            except ApiError as error:
                if not error.retryable or error.status == 429:  # a 429 here is a limit of this user's: say so
                    raise
                failure: AttemptFailed = error
            except (httpx.TransportError, OSError) as error:
                failure = AttemptFailed(f"The connection was lost ({type(error).__name__}).")
            failures += 1
            if failures >= self.config.max_failed_attempts:
                raise failure
            base = self.config.backoff_base_s or DEFAULT_BACKOFF_BASE_S
            await asyncio.sleep(retry_delay(failure, failures - 1, base, self.config.backoff_cap_s))

    @staticmethod
    def _posted(body: dict) -> Posted:
        return Posted(body["message"], body["generation"])

    # --- Streams ------------------------------------------------------------------

    def ask(
        self,
        conversation_id: int,
        content: str,
        *,
        model: str | None = None,
        response_format: str | None = None,
        parent_id=NEWEST,
        idempotency_key: str | None = None,
        on_state: Callable[[StateChange], None] | None = None,
        config: Config | None = None,
        transport: str | None = None,
    ) -> AnswerStream:
        """Post a message and follow its answer. Over SSE this is one request (the POST's 201 is the stream);
        every retry of the post carries the same Idempotency-Key (`stream.idempotency_key`)."""
        request = self._message(
            conversation_id, content, stream=True, model=model, response_format=response_format, parent_id=parent_id, key=idempotency_key
        )
        return AnswerStream(
            self, post=request, config=config or self.config, transport=transport or self.transport, on_state=on_state
        )

    def follow(
        self,
        generation_id: str,
        *,
        last_event_id: int | None = None,
        text: str = "",
        reasoning: str = "",
        on_state: Callable[[StateChange], None] | None = None,
        config: Config | None = None,
        transport: str | None = None,
    ) -> AnswerStream:
        """Follow a generation from `last_event_id` (None: from the start), appending to `text`."""
        return AnswerStream(
            self,
            generation_id=str(generation_id),
            last_event_id=last_event_id,
            text=text,
            reasoning=reasoning,
            config=config or self.config,
            transport=transport or self.transport,
            on_state=on_state,
        )

    async def continuation(self, generation_id: str) -> dict | None:
        """The generation that continues this one (it fills the same message), or None if there is none yet.

        Continuations are started by an operator (the admin's Continue action, docs/protocol.md).
        """
        generation = await self.generation(generation_id)
        for message in reversed(await self.messages(generation["conversation_id"])):
            if message["id"] == generation["assistant_message_id"]:
                newest = message.get("generation") or {}
                return await self.generation(newest["id"]) if str(newest.get("id")) != str(generation_id) else None
        return None

    async def continue_answer(self, answer: Answer, continuation_id: str | None = None, **options) -> AnswerStream:
        """Follow the continuation of an ended answer so that its text becomes the whole stored answer.

        It resumes from the old answer's last id with its text: the continuation's tokens are appended.
        """
        if continuation_id is None:
            continuation = await self.continuation(answer.generation_id)
            if continuation is None:
                raise ChatError(f"Generation {answer.generation_id} has no continuation.")
            continuation_id = continuation["id"]
        return self.follow(
            continuation_id, last_event_id=answer.last_event_id, text=answer.text, reasoning=answer.reasoning, **options
        )


class ChatClient:
    """The blocking client: every method of AsyncChatClient, run on a private event loop.

    Not for use inside a running event loop (use AsyncChatClient there).
    """

    def __init__(self, base_url: str, token: str | None = None, **options):
        self._runner = asyncio.Runner()
        self._async = AsyncChatClient(base_url, token, **options)

    @property
    def token(self) -> str | None:
        return self._async.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._async.token = value

    def _run(self, awaitable):
        return self._runner.run(awaitable)

    def close(self) -> None:
        self._run(self._async.aclose())
        self._runner.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ask(self, *args, **kwargs) -> "BlockingAnswerStream":
        return BlockingAnswerStream(self, self._async.ask(*args, **kwargs))

    def follow(self, *args, **kwargs) -> "BlockingAnswerStream":
        return BlockingAnswerStream(self, self._async.follow(*args, **kwargs))

    def continue_answer(self, *args, **kwargs) -> "BlockingAnswerStream":
        return BlockingAnswerStream(self, self._run(self._async.continue_answer(*args, **kwargs)))


def _blocking(name: str):
    method = getattr(AsyncChatClient, name)

    def call(self, *args, **kwargs):
        return self._run(method(self._async, *args, **kwargs))

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


for _name in (
    "login", "logout", "conversations", "create_conversation", "messages", "models", "generation",
    "cancel", "regenerate", "post_message", "continuation",
):
    setattr(ChatClient, _name, _blocking(_name))


class BlockingAnswerStream:
    """An AnswerStream for blocking code: iterate it (`for event in stream`) or `stream.collect()`.

    Its connection is read while you wait for the next event: a caller that spends
    longer than `stall_s` between events may see a reconnect (nothing is lost).
    """

    def __init__(self, client: ChatClient, stream: AnswerStream):
        self._client = client
        self.stream = stream
        self._events = stream.__aiter__()

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                yield self._client._run(self._events.__anext__())
            except StopAsyncIteration:
                return

    def collect(self) -> Answer:
        for _ in self:
            pass
        return self.stream.answer()

    def cancel(self) -> dict:
        return self._client._run(self.stream.cancel())

    def close(self) -> None:
        self._client._run(self.stream.aclose())

    def __getattr__(self, name):  # text, reasoning, last_event_id, end, state, generation_id, ...
        return getattr(self.stream, name)
