import gc

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .llm.catalog import chat_models
        from .server import middleware  # noqa: F401  (registers its system check)
        from .server.daphne import exit_after_reactor_stops, start_background_tasks
        from .streaming.reaper import start_with_first_request

        chat_models()  # A bad CHAT_MODELS stops the start, not the first message.

        start_with_first_request()
        exit_after_reactor_stops()
        start_background_tasks()
        # Everything loaded so far lives as long as the process: keep it out of
        # the garbage collector's full passes, which otherwise stopped every
        # stream for 70-130 ms every second or so under load (docs/performance.md).
        gc.freeze()
        # And a young collection once 10,000 more objects were made than freed, not 700.
        # A stream's objects die by reference counting, yet under load their churn crossed
        # 700 so often that collections took up to 18 % of the process's time, full ones
        # (80-110 ms, every stream stopped) among them; at 10,000 both left the steady
        # state (docs/performance.md). The older generations keep Python's 10 and 10.
        gc.set_threshold(10_000, 10, 10)
