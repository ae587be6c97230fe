"""ASGI entry point: Django for HTTP, Channels for WebSockets, lifespan for clean shutdown."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Set up Django before anything imports models (as django.core.asgi.get_asgi_application does).
django.setup(set_prefix=False)

from chat.server.handler import ASGIHandler  # noqa: E402

django_asgi_app = ASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.db import SharedDatabaseThreads  # noqa: E402
from chat.server.lifespan import lifespan_app  # noqa: E402
from chat.server.logs import LogUnhandled  # noqa: E402
from chat.server.routing import (  # noqa: E402
    OriginValidator,
    TokenAuthMiddleware,
    websocket_urlpatterns,
)

# Outermost: whatever escapes the rest is logged with its method and path (chat/server/logs.py).
application = LogUnhandled(
    SharedDatabaseThreads(
        ProtocolTypeRouter(
            {
                "http": django_asgi_app,
                # The origin check stops other sites from riding a logged-in browser's session cookie.
                "websocket": OriginValidator(
                    AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
                ),
                "lifespan": lifespan_app,
            }
        )
    )
)
