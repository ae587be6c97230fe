"""`chat-client`, the terminal client, run as a command against a real server."""

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from chat_client import ChatClient
from chat_client.cli import (
    EXIT_CANCELLED,
    EXIT_COMPLETE,
    EXIT_NOT_FOUND,
    EXIT_UNAUTHORIZED,
)

from tests.support.server import USERS

SLOW = {"CHAT_SIMULATED_TOKENS_PER_S": "40", "CHAT_SIMULATED_POINTS": "4"}


def chat_client(server, *args: str, token: str | None = None, stdin: str = "", **options) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "chat_client", "--url", server.url, *(["--token", token] if token else []), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, **options)


@pytest.fixture
def server(start_server):
    return start_server("sqlite", **SLOW)


@pytest.fixture
def token(server) -> str:
    login = chat_client(server, "login", "alice", "--password-stdin", "--name", "cli test", stdin=USERS["alice"] + "\n")
    assert login.returncode == EXIT_COMPLETE, login.stderr
    return login.stdout.strip()


def test_ask_prints_exactly_the_stored_answer_without_a_terminal(server, token):
    asked = chat_client(server, "ask", "How do I resume a stream?", token=token)
    assert asked.returncode == EXIT_COMPLETE, asked.stderr
    with ChatClient(server.url, token) as chat:
        conversation = chat.conversations(limit=1)[0]
        answer = next(m for m in chat.messages(conversation["id"]) if m["role"] == "assistant")
        stored = chat.generation(answer["generation"]["id"])
    assert asked.stdout == stored["text"] + "\n"  # plain text: no colour codes, no Markdown rendering
    assert conversation["title"] == "How do I resume a stream?"

    listed = chat_client(server, "conversations", token=token)
    assert listed.returncode == EXIT_COMPLETE and listed.stdout.split()[0] == str(conversation["id"])

    # Resume from the middle: exactly the rest of the answer.
    middle = stored["last_seq"] // 2
    rest = chat_client(server, "ask", "--resume", stored["id"], "--last-event-id", str(middle), token=token)
    assert rest.returncode == EXIT_COMPLETE
    assert stored["text"].endswith(rest.stdout.removesuffix("\n")) and len(rest.stdout) < len(stored["text"])


def test_json_prints_every_event_and_the_exit_status_says_how_it_ended(server, token):
    with ChatClient(server.url, token) as chat:
        conversation = chat.create_conversation()
        stream = chat.ask(conversation["id"], "A slow answer")
        generation_id = next(e for e in stream if type(e).__name__ == "Posted").generation["id"]
        chat.cancel(generation_id)
        stream.close()
    followed = chat_client(server, "--json", "ask", "--resume", generation_id, token=token)
    assert followed.returncode == EXIT_CANCELLED, followed.stderr
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert events[0] == {"type": "statechange", "state": "connecting", "reason": "", "failures": 0, "fallback": False, "final": False, "retry_in": None}
    end = next(e for e in events if e["type"] == "end")
    assert end["status"] == "cancelled" and events[-1]["state"] == "ended"

    missing = chat_client(server, "ask", "--resume", "00000000-0000-4000-8000-000000000000", token=token)
    assert missing.returncode == EXIT_NOT_FOUND and "not_found" in missing.stderr
    stranger = chat_client(server, "conversations", token="chat_not-a-token")
    assert stranger.returncode == EXIT_UNAUTHORIZED and "invalid_token" in stranger.stderr


def test_a_terminal_gets_the_answer_rendered_as_markdown(server, token):
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "chat_client", "--url", server.url, "--token", token, "ask", "Show me some code"],
            stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "100", "TERM": "xterm-256color"},
        )
        os.close(terminal)
        output = b""
        while chunk := read_some(controller):
            output += chunk
        assert process.wait(60) == EXIT_COMPLETE, process.stderr.read()
    finally:
        os.close(controller)
    with ChatClient(server.url, token) as chat:
        conversation = chat.conversations(limit=1)[0]
        answer = next(m for m in chat.messages(conversation["id"]) if m["role"] == "assistant")
    item = next(line for line in answer["content"].splitlines() if line.startswith("1. "))  # a Markdown list
    screen = output.decode(errors="replace")
    # The live view shows the text as written; the last frame (after the last line clear) is it rendered.
    final = screen[screen.rindex("\x1b[2K") :]
    assert item in screen and item not in final and item.removeprefix("1. ") in final
    assert "\x1b[36m 1 \x1b[0m" in final  # rich's numbered list


def read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the other end closed (EIO on Linux)
        return b""


def test_the_example_prints_the_stored_answer(server):
    example = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "ask.py"
    run = subprocess.run(
        [sys.executable, str(example), server.url, "alice", USERS["alice"], "What is an event id?"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    with ChatClient(server.url) as chat:
        chat.login("alice", USERS["alice"])
        conversation = chat.conversations(q="What is an event id?", limit=1)[0]
        answer = next(m for m in chat.messages(conversation["id"]) if m["role"] == "assistant")
    assert run.stdout.startswith(answer["content"] + "\n\ncomplete (stop)")
    assert run.stderr.split() == ["[connecting]", "[streaming]", "[ended:", "complete]"]
