"""Helpers for the Durable Streams tests."""

DS = "/ds/v1/stream"

TERMINAL_TYPES = {"done", "interrupted", "failed", "cancelled"}


def generation_url(base_url: str, generation_id: str) -> str:
    return f"{base_url}{DS}/generations/{generation_id}"


def offset(seq: int, *, end: bool = False) -> str:
    return f"{seq:016d}" + ("_end" if end else "")


def rebuild(messages: list[dict]) -> tuple[str, dict | None]:
    """The answer a client shows from a generation's messages, and the terminal message if it came."""
    text, end = "", None
    for message in messages:
        if message["type"] == "token":
            text += message["text"]
        elif message["type"] == "snapshot":
            text = message["text"]
        elif message["type"] in TERMINAL_TYPES:
            end = message
    return text, end
