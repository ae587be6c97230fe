"""Cursors: opaque to clients, keyset pagination underneath."""

import base64
import binascii
import json
from datetime import UTC, datetime

from ..errors import ApiError

# Postgres and SQLite both store ids as signed 64-bit integers.
MAX_ID = 2**63 - 1


def encode_cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(raw: str, kind: str, length: int) -> list:
    """The `length` parts of a cursor this API gave out for `kind`; anything else is a 400."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if isinstance(parts, list) and len(parts) == length + 1 and parts[0] == kind:
            return parts[1:]
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise invalid_cursor()


def invalid_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "cursor is not one this API gave out for this list.", "cursor")


def valid_id(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise invalid_cursor()
    return value


def valid_time(value) -> datetime:
    """A cursor's timestamp, in UTC as the database compares it; one that is not in years 1-9999 there is a 400."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is not None:
            return moment.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        pass
    raise invalid_cursor()
