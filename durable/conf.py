"""The app's settings: a Django setting of the same name wins, else the environment, else the default."""

import os

from django.conf import settings

DEFAULTS = {
    # Below the conformance suite's 21 s per test, and below common proxy idle timeouts.
    "DURABLE_LONG_POLL_TIMEOUT_S": 15.0,
    # SSE responses end after this long so that caches can collapse reconnecting clients (protocol 10.2).
    "DURABLE_SSE_MAX_S": 60.0,
    # One append's body; larger ones get a 413.
    "DURABLE_MAX_APPEND_BYTES": 1024 * 1024,
    # Messages one JSON append may add (an array's items); more is a 413. One message is one row:
    # a 1 MiB array of zeros was 524,000 rows, whose insert held SQLite's write lock for 14 s.
    "DURABLE_MAX_MESSAGES_PER_APPEND": 1000,
    # Brackets a JSON message may nest; deeper is a 400 (the parser recurses).
    "DURABLE_MAX_JSON_DEPTH": 64,
    # Per user, across their streams of the general namespace: past either, a 403 (streams) or 413 (bytes).
    "DURABLE_MAX_STREAMS_PER_USER": 100,
    "DURABLE_MAX_BYTES_PER_USER": 64 * 1024 * 1024,
    # A catch-up response stops after the message that crosses this many bytes.
    "DURABLE_READ_CHUNK_BYTES": 1024 * 1024,
    # `manage.py prune_durable_streams` drops messages older than this (0: keep all).
    "DURABLE_RETENTION_DAYS": 0.0,
}


def setting(name: str):
    default = DEFAULTS[name]
    if hasattr(settings, name):
        return getattr(settings, name)
    raw = os.environ.get(name)
    return type(default)(raw) if raw not in (None, "") else default
