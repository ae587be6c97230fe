"""ASGI entry point: Django for HTTP, Channels for WebSockets, lifespan for clean shutdown."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Set up Django before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.db import SharedDatabaseThreads  # noqa: E402
from chat.lifespan import lifespan_app  # noqa: E402
from chat.routing import OriginValidator, TokenAuthMiddleware, websocket_urlpatterns  # noqa: E402

application = SharedDatabaseThreads(
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
