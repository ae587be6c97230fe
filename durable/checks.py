"""System checks of the app's settings."""

from django.conf import settings
from django.core import checks

from .conf import setting


@checks.register()
def check_append_limit(app_configs, **kwargs):
    """An append larger than CHAT_MAX_BODY_BYTES never reaches the app: every body is held to that first."""
    append, body = setting("DURABLE_MAX_APPEND_BYTES"), settings.CHAT_MAX_BODY_BYTES
    if append <= body:
        return []
    return [
        checks.Warning(
            f"DURABLE_MAX_APPEND_BYTES ({append}) is larger than CHAT_MAX_BODY_BYTES ({body}).",
            hint="Raise CHAT_MAX_BODY_BYTES too: larger bodies are refused before any view reads them.",
            id="durable.W001",
        )
    ]
