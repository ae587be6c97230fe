"""Server-Sent Events encoding, the project's one: pure, with no framework imports."""


def _field_value(value: object) -> str:
    # id and event are single-line fields; a newline would start a new field.
    return str(value).replace("\r", "").replace("\n", "")


def encode(
    data: str | None = None,
    *,
    event: str | None = None,
    id: object | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one SSE message; multi-line data becomes several `data:` lines."""
    lines = []
    if comment is not None:
        lines += [f": {line}" for line in comment.splitlines() or [""]]
    if id is not None:
        lines.append(f"id: {_field_value(id)}")
    if event is not None:
        lines.append(f"event: {_field_value(event)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    if data is not None:
        lines += [f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def encode_event(id: int, event: str, data: str) -> bytes:
    """`encode` for the stream's own events, per token: names and ids are ours, and JSON data has no raw newline."""
    return f"id: {id}\nevent: {event}\ndata: {data}\n\n".encode()
