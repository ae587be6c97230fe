"""Parse-ready snapshots of a JSON document that is still arriving.

Pure code, no framework imports. Feed the text as it comes; after each feed,
`grew` says whether the snapshot changed. The snapshot is the document so
far with only complete values in it (docs/protocol.md, "Structured answers"):

- a string, number, true, false or null appears once it is complete;
- an array shows only its complete elements, so a card in a list of cards
  appears whole or not at all;
- an object shows its complete members, and also a member whose value is an
  array or object still being written (shown by these same rules);
- the top-level array or object appears as soon as it opens.

So every snapshot is valid JSON, each one extends the one before, and once
the document is complete the snapshot is the document.
"""

import json
import re

# Deeper nesting is refused: it is never a real answer, and recursion in
# json.dumps would fail on it.
MAX_DEPTH = 256

NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
NUMBER_CHARS = frozenset("0123456789+-.eE")
LITERALS = {"true": True, "false": False, "null": None}
WHITESPACE = frozenset(" \t\n\r")
STRING_SPECIAL = re.compile(r'["\\]')

_NOTHING = object()


class InvalidJson(ValueError):
    pass


class _Frame:
    __slots__ = ("container", "is_object", "visible", "state", "key")

    def __init__(self, container, visible: bool):
        self.container = container
        self.is_object = isinstance(container, dict)
        self.visible = visible
        # Objects: "first_key" | "key" | "colon" | "value" | "next"; arrays: "first_value" | "value" | "next".
        self.state = "first_key" if self.is_object else "first_value"
        self.key = None


class JsonSnapshots:
    """Incremental parser of one JSON document; see the module docstring for the snapshot rule."""

    def __init__(self):
        self.stack: list[_Frame] = []
        self.root = _NOTHING
        self.done = False  # The top-level value is complete; only whitespace may follow.
        self.error: str | None = None
        self.grew = False
        self.offset = 0  # Characters consumed, for error messages.
        # The scalar being read: kind "string" | "key" | "number" | "literal", and its characters.
        self.scalar: str | None = None
        self.buffer: list[str] = []
        self.escaped = False

    # --- Public -------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def has_snapshot(self) -> bool:
        return self.root is not _NOTHING

    @property
    def complete(self) -> bool:
        return self.done and self.error is None

    def snapshot(self):
        return None if self.root is _NOTHING else self.root

    def dumps(self) -> str:
        """The snapshot, encoded compactly, for a `json` event."""
        return json.dumps(self.root, ensure_ascii=False, separators=(",", ":"))

    def feed(self, text: str) -> bool:
        """Consume more of the document; return True if the snapshot changed."""
        self.grew = False
        if self.error is None:
            try:
                self._consume(text)
            except InvalidJson as exc:
                self.error = str(exc)
        return self.grew

    def finish(self) -> bool:
        """The input has ended: a top-level number completes here. Return True if the snapshot changed."""
        self.grew = False
        if self.error is not None:
            return False
        if self.scalar == "number" and not self.stack:
            try:
                self._end_number()
            except InvalidJson as exc:
                self.error = str(exc)
        elif not self.done:
            self.error = "the document ends before it is complete"
        return self.grew

    # --- The state machine -----------------------------------------------------

    def _fail(self, message: str):
        raise InvalidJson(f"{message} at character {self.offset}")

    def _consume(self, text: str) -> None:
        index, length = 0, len(text)
        while index < length:
            if self.scalar in ("string", "key"):
                index = self._string_part(text, index)
                continue
            char = text[index]
            if self.scalar == "number":
                if char in NUMBER_CHARS:
                    self.buffer.append(char)
                    index += 1
                    self.offset += 1
                    continue
                self._end_number()
            elif self.scalar == "literal":
                self.buffer.append(char)
                index += 1
                self.offset += 1
                word = "".join(self.buffer)
                if word in LITERALS:
                    self.scalar = None
                    self._value(LITERALS[word])
                elif not any(literal.startswith(word) for literal in LITERALS):
                    self._fail(f"unexpected {word!r}")
                continue
            self._structural(char)
            index += 1
            self.offset += 1

    def _string_part(self, text: str, index: int) -> int:
        """Read string characters up to the closing quote or the end of `text`; return the new index."""
        while index < len(text):
            if self.escaped:
                self.buffer.append(text[index])
                self.escaped = False
                index += 1
                self.offset += 1
                continue
            match = STRING_SPECIAL.search(text, index)
            end = match.start() if match else len(text)
            self.buffer.append(text[index:end])
            self.offset += end - index
            index = end
            if match is None:
                return index
            index += 1
            self.offset += 1
            if match.group() == "\\":
                self.buffer.append("\\")
                self.escaped = True
                continue
            self._end_string()
            return index
        return index

    def _end_string(self) -> None:
        raw = "".join(self.buffer)
        try:
            # The stdlib decoder handles escapes and surrogate pairs, and refuses raw control characters.
            value = json.loads(f'"{raw}"')
        except ValueError:
            self._fail("invalid string")
        kind, self.scalar, self.buffer = self.scalar, None, []
        if kind == "key":
            frame = self.stack[-1]
            frame.key = value
            frame.state = "colon"
        else:
            self._value(value)

    def _end_number(self) -> None:
        raw = "".join(self.buffer)
        self.scalar, self.buffer = None, []
        if not NUMBER.fullmatch(raw):
            self._fail(f"invalid number {raw!r}")
        self._value(json.loads(raw))

    def _expecting_value(self) -> bool:
        if not self.stack:
            return not self.done
        frame = self.stack[-1]
        return frame.state in ("value", "first_value")

    def _structural(self, char: str) -> None:
        if char in WHITESPACE:
            return
        if self._expecting_value():
            if char == "{":
                self._open({})
            elif char == "[":
                self._open([])
            elif char == '"':
                self.scalar, self.buffer = "string", []
            elif char == "-" or "0" <= char <= "9":
                self.scalar, self.buffer = "number", [char]
            elif char in "tfn":
                self.scalar, self.buffer = "literal", [char]
            elif char == "]" and self.stack and self.stack[-1].state == "first_value":
                self._close()
            else:
                self._fail(f"unexpected {char!r} where a value should start")
            return
        if not self.stack:
            self._fail(f"unexpected {char!r} after the end of the document")
        frame = self.stack[-1]
        if frame.state in ("first_key", "key"):
            if char == '"':
                self.scalar, self.buffer = "key", []
            elif char == "}" and frame.state == "first_key":
                self._close()
            else:
                self._fail(f"unexpected {char!r} where a key should start")
        elif frame.state == "colon":
            if char != ":":
                self._fail(f"expected ':' but found {char!r}")
            frame.state = "value"
        elif frame.state == "next":
            if char == ",":
                frame.state = "key" if frame.is_object else "value"
            elif char == ("}" if frame.is_object else "]"):
                self._close()
            else:
                self._fail(f"expected ',' or a closing bracket but found {char!r}")

    def _open(self, container) -> None:
        if len(self.stack) >= MAX_DEPTH:
            self._fail(f"nesting deeper than {MAX_DEPTH}")
        if not self.stack:
            self.root = container
            self.grew = True
            visible = True
        else:
            parent = self.stack[-1]
            if parent.is_object:
                # An open array or object shows as a member at once, holding its complete parts.
                parent.container[parent.key] = container
                self.grew = self.grew or parent.visible
                visible = parent.visible
            else:
                visible = False  # An array element shows only once complete.
        self.stack.append(_Frame(container, visible))

    def _close(self) -> None:
        frame = self.stack.pop()
        if not self.stack:
            self.done = True
            return
        parent = self.stack[-1]
        if parent.is_object:
            parent.state = "next"  # Already shown as a member while open.
        else:
            self._value(frame.container)

    def _value(self, value) -> None:
        """A scalar or an array element is complete: show it."""
        if not self.stack:
            self.root = value
            self.done = True
            self.grew = True
            return
        frame = self.stack[-1]
        if frame.is_object:
            frame.container[frame.key] = value
        else:
            frame.container.append(value)
        frame.state = "next"
        if frame.visible:
            self.grew = True


def document_error(text: str) -> str | None:
    """Why `text` is not one complete JSON document (by the same rules as the snapshots), or None if it is."""
    parser = JsonSnapshots()
    parser.feed(text)
    parser.finish()
    return parser.error


def parse_document(text: str):
    """The value of a complete JSON document; raise InvalidJson if it is not one."""
    parser = JsonSnapshots()
    parser.feed(text)
    parser.finish()
    if parser.error is not None:
        raise InvalidJson(parser.error)
    return parser.root
