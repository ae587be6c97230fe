import gc

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import middleware  # noqa: F401  (registers its system check)
        from .daphne import exit_after_reactor_stops
        from .llm.catalog import chat_models
        from .reaper import start_with_first_request

        chat_models()  # A bad CHAT_MODELS stops the start, not the first message.

        start_with_first_request()
        exit_after_reactor_stops()
        # Everything loaded so far lives as long as the process: keep it out of
        # the garbage collector's full passes, which otherwise stopped every
        # stream for 70-130 ms every second or so under load (docs/performance.md).
        gc.freeze()
        # And a full pass every 100 passes of the middle generation rather than 10: each one
        # still stopped every stream for about 60 ms at 200 streams.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 100)
