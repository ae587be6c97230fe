"""`chat-client`: ask, follow and resume answers from a terminal (or a script: see the exit statuses)."""

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import sys

from .client import AsyncChatClient
from .errors import ApiError, ChatError, Forbidden, NotFound, StreamFailed, Unauthorized
from .events import Event, Reasoning, Snapshot, State, StateChange, Token
from .retry import Config

# The exit status says how the answer ended (docs/python-client.md).
EXIT_COMPLETE = 0
EXIT_ERROR = 1  # anything unexpected
EXIT_USAGE = 2  # argparse's own
EXIT_INTERRUPTED = 3  # the answer ended interrupted (upstream stall or error, server shutdown...): partial text
EXIT_FAILED = 4  # the model failed before the first token
EXIT_CANCELLED = 5
EXIT_UNAUTHORIZED = 6  # 401 or 403: log in again
EXIT_NOT_FOUND = 7  # 404
EXIT_REFUSED = 8  # another refusal by the server (400, 409, 413, 429, 503...)
EXIT_UNREACHABLE = 9  # no progress for --give-up-s: the server cannot be reached
EXIT_INTERRUPT = 130  # Ctrl-C
EXIT_BY_STATUS = {"complete": EXIT_COMPLETE, "interrupted": EXIT_INTERRUPTED, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="chat-client", description="Stream answers from a django-llm-stream server.")
    cli.add_argument("--url", default=os.environ.get("CHAT_URL", "http://127.0.0.1:8000"), help="the server (env CHAT_URL)")
    cli.add_argument("--token", default=os.environ.get("CHAT_TOKEN"), help="a bearer token (env CHAT_TOKEN; see `login`)")
    cli.add_argument("--transport", choices=("sse", "ws"), default="sse", help="SSE (default) or the WebSocket route")
    cli.add_argument("--json", action="store_true", help="print every event as a JSON line instead of the text")
    cli.add_argument("--stall-s", type=float, default=Config.stall_s, help="no byte for this long is a dead connection (10)")
    cli.add_argument("--give-up-s", type=float, default=120.0, help="stop after this long without progress (120)")
    commands = cli.add_subparsers(dest="command", required=True)

    login = commands.add_parser("login", help="exchange a username and password for a token, and print it")
    login.add_argument("username")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("--name", help="a name for the token (the device)")

    conversations = commands.add_parser("conversations", help="list your conversations, most recent first")
    conversations.add_argument("-q", dest="query", help="only those whose title or messages contain this")
    conversations.add_argument("--limit", type=int, default=20)

    ask = commands.add_parser("ask", help="ask and stream the answer (or follow one with --resume)")
    ask.add_argument("prompt", nargs="?", help="the message (omit with --resume)")
    ask.add_argument("--conversation", type=int, help="the conversation (default: a new one)")
    ask.add_argument("--model", help="a model id (see /api/models)")
    ask.add_argument("--resume", metavar="GENERATION_ID", help="follow this generation instead of asking")
    ask.add_argument("--last-event-id", type=int, help="with --resume: the last id you have (default: the whole answer)")
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "ask" and not (args.prompt or args.resume):
        parser().error("ask needs a prompt, or --resume GENERATION_ID")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPT


async def run(args) -> int:
    config = Config(stall_s=args.stall_s, give_up_after_s=args.give_up_s)
    async with AsyncChatClient(args.url, args.token, config=config, transport=args.transport) as client:
        try:
            if args.command == "login":
                password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass()
                issued = await client.login(args.username, password, name=args.name)
                print(json.dumps(issued) if args.json else issued["token"])
                return EXIT_COMPLETE
            if args.command == "conversations":
                items = await client.conversations(q=args.query, limit=args.limit)
                for item in items:
                    print(json.dumps(item) if args.json else f"{item['id']:>6}  {item['updated_at'][:19]}  {item['title']}")
                return EXIT_COMPLETE
            return await ask(client, args)
        except (Unauthorized, Forbidden) as error:
            return fail(error, EXIT_UNAUTHORIZED)
        except NotFound as error:
            return fail(error, EXIT_NOT_FOUND)
        except ApiError as error:
            return fail(error, EXIT_REFUSED)
        except StreamFailed as error:
            return fail(error, EXIT_UNREACHABLE)
        except ChatError as error:
            return fail(error, EXIT_ERROR)


def fail(error: Exception, status: int) -> int:
    print(f"chat-client: {error}", file=sys.stderr)
    return status


async def ask(client: AsyncChatClient, args) -> int:
    if args.resume:
        stream = client.follow(args.resume, last_event_id=args.last_event_id)
    else:
        conversation = args.conversation or (await client.create_conversation(args.prompt[:60]))["id"]
        stream = client.ask(conversation, args.prompt, model=args.model)
    show = JsonLines() if args.json else (RichView() if sys.stdout.isatty() and rich_available() else PlainText())
    try:
        async for event in stream:
            show.event(event, stream)
    finally:
        show.close(stream)
    return EXIT_BY_STATUS.get(stream.end.status, EXIT_ERROR) if stream.end else EXIT_ERROR


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def say(change: StateChange) -> str | None:
    """One line on standard error for the transitions a person wants to know about."""
    if change.state == State.INTERRUPTED:
        then = "reading the stored answer" if change.fallback else "reconnecting"
        return f"[interrupted: {change.reason} {then}]"
    if change.state == State.ERROR:
        return f"[error: {change.reason}]" + ("" if change.final else " [still trying]")
    if change.state == State.FALLBACK:
        return "[the stream kept failing: this is the stored answer]"
    return None


class PlainText:
    """No terminal: the answer's text as it arrives, on standard output; notices on standard error."""

    def __init__(self):
        self.shown = ""

    def event(self, event: Event, stream) -> None:
        if isinstance(event, StateChange):
            if line := say(event):
                print(line, file=sys.stderr, flush=True)
        elif isinstance(event, (Token, Snapshot)):
            if stream.text.startswith(self.shown):
                sys.stdout.write(stream.text[len(self.shown) :])
            else:  # a snapshot replaced what was shown (a correction): start the text again
                sys.stdout.write("\n" + stream.text)
            self.shown = stream.text
            sys.stdout.flush()

    def close(self, stream) -> None:
        if self.shown:
            sys.stdout.write("\n")
        if stream.end and stream.end.status != "complete":
            print(f"[{stream.end.status}{': ' + stream.end.reason if stream.end.reason else ''}]", file=sys.stderr)


class RichView(PlainText):
    """A terminal: the text live as it comes, then rendered as Markdown in its place once it ends."""

    def __init__(self):
        super().__init__()
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self.text_of = Text
        self.console = Console()
        self.errors = Console(stderr=True)
        self.live = Live(Text(""), console=self.console, refresh_per_second=12, vertical_overflow="visible")
        self.live.start()

    def event(self, event: Event, stream) -> None:
        if isinstance(event, StateChange):
            if line := say(event):
                self.errors.print(line, style="yellow", markup=False)
        elif isinstance(event, (Token, Snapshot, Reasoning)):
            view = self.text_of(stream.reasoning + "\n\n", style="dim") if stream.reasoning else self.text_of("")
            self.live.update(view + self.text_of(stream.text))

    def close(self, stream) -> None:
        from rich.markdown import Markdown

        self.live.update(Markdown(stream.text))
        self.live.stop()
        if stream.end and stream.end.status != "complete":
            self.errors.print(f"[{stream.end.status}{': ' + stream.end.reason if stream.end.reason else ''}]", style="yellow", markup=False)


class JsonLines:
    """--json: each event as one JSON line, `{"type": ..., ...}`, state changes included."""

    def event(self, event: Event, stream) -> None:
        print(json.dumps({"type": type(event).__name__.lower(), **dataclasses.asdict(event)}, default=str), flush=True)

    def close(self, stream) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
