"""The streaming core: run a generation apart from any request, persist its tokens, fan them out, follow them.

    runner      a generation's run: upstream tokens -> the hub (live) and the writer (batched); its end or hand-on
    registry    this process's runs and its worker name; heartbeat and shutdown keep them
    writer      one batched INSERT per interval for every run's tokens
    hub         per-generation fan-out: local inboxes directly, other processes through the channel layer
    events      what a generation publishes and every transport sends, each encoding computed once
    follow      `Follow`: replay from the run or the database, then tail the hub; the one implementation
    answers     reading stored answers (tokens, parts, ends); sse and jsonstream: encodings
    reaper      ends or hands on generations whose process is gone; workers: `manage.py run_generations`

May import chat's models, db, errors, llm and actions (the writes: an end, the queue); never the
transports, the API, the admin or the server, which all import it.
"""
