"""The transports of a generation's stream: each parses its request, iterates `Follow` and encodes.

    sse         GET /api/generations/<id>/stream, and the POST that streams its own answer
    ws          the WebSocket route, the same events as JSON frames
    live        the per-user event channel (/api/events/, django-eventstream)
    common      the resume position, the coalescing window and the connection log they share

Durable Streams' generation reader (durable/generations.py) is a transport too; it lives in the `durable`
app with the rest of that protocol (its offsets, its headers, its general stream namespace).

May import the streaming core, the models, db and admission; never the API routes or the admin.
"""
