"""The client of the network-switch tests: run inside the phone's namespace, it asks through the Python
client library and writes what happens as JSON lines on standard output, each with its monotonic time
(one clock for every namespace of the machine). SIGUSR1 is the app being told the network changed.

    ip netns exec PHONE python -m tests.support.phone URL --transport sse --stall-s 2
"""

import argparse
import asyncio
import json
import signal
import sys
import time

from chat_client import AsyncChatClient, Config, Posted, StateChange, Token


def emit(kind: str, **fields) -> None:
    print(json.dumps({"t": time.monotonic(), "kind": kind, **fields}), flush=True)


async def main() -> None:
    cli = argparse.ArgumentParser()
    cli.add_argument("url")
    cli.add_argument("--transport", default="sse")
    cli.add_argument("--stall-s", type=float, required=True)
    cli.add_argument("--username", default="alice")
    cli.add_argument("--password", default="alice-password")
    args = cli.parse_args()
    config = Config(stall_s=args.stall_s, backoff_base_s=0.1, backoff_cap_s=1.0)
    async with AsyncChatClient(args.url, config=config, transport=args.transport) as client:
        await client.login(args.username, args.password)
        conversation = await client.create_conversation("network switch")
        stream = client.ask(conversation["id"], "Tell me about resumable streams on a phone")
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stream.reconnect)
        async for event in stream:
            if isinstance(event, Posted):
                emit("posted", generation_id=stream.generation_id)
            elif isinstance(event, Token):
                emit("token", seq=event.seq, text=event.text)
            elif isinstance(event, StateChange):
                emit("state", state=event.state.value, reason=event.reason)
        emit(
            "answer", generation_id=stream.generation_id, text=stream.text, last_event_id=stream.last_event_id,
            status=stream.end.status, fallback=stream.end.fallback, duplicates=stream.duplicates, attempts=stream.attempts,
        )


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
