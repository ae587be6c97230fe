"""Ask a question and print the answer as it streams, with what the connection does on standard error.

    python clients/python/examples/ask.py http://127.0.0.1:8000 demo demo "How do I resume a stream?"

Cut your network mid-answer (or stop and restart `make run`): the client says so, resumes
from its last event id when it can, and prints the whole answer exactly once.
"""

import asyncio
import sys

from chat_client import AsyncChatClient, End, Snapshot, StateChange, Token


async def main(url: str, username: str, password: str, question: str) -> int:
    async with AsyncChatClient(url) as chat:
        await chat.login(username, password, name="example")
        conversation = await chat.create_conversation(question[:60])
        stream = chat.ask(conversation["id"], question)
        shown = ""
        async for event in stream:
            if isinstance(event, StateChange):
                print(f"\n[{event.state.value}{': ' + event.reason if event.reason else ''}]", file=sys.stderr)
            elif isinstance(event, Token):
                print(event.text, end="", flush=True)
                shown += event.text
            elif isinstance(event, Snapshot) and event.text != shown:  # the stored text replaces ours
                print(f"\n{event.text}", end="", flush=True)
                shown = event.text
            elif isinstance(event, End):
                print(f"\n\n{event.status} ({event.finish_reason or event.reason}), {event.seq} tokens, generation {stream.generation_id}")
        return 0 if stream.end.status == "complete" else 1


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(*sys.argv[1:])))
