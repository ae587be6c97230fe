"""The ASGI process: Django's handler made lean, middleware, WebSocket routing, lifespan and Daphne hooks,
and admission (per-user and per-process stream caps, load shedding).

May import everything else in chat; nothing in chat imports it but the actions and transports, for admission.
"""
