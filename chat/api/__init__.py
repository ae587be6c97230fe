"""The JSON API (django-ninja): routes parse, call one action or one read, and shape the output.

    routes      the chat routes, mounted with the docs and the one error shape by project/api.py
    reads       the queries the routes answer with (lists, pages, a generation with its answer)
    schemas     input and output schemas; pagination: opaque cursors
    auth        bearer tokens beside the session; lockout: login throttling (django-axes)

May import the actions, the streaming core (to follow an answer in the POST itself) and the transports.
"""
