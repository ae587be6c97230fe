from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .daphne import exit_after_reactor_stops
        from .llm.catalog import chat_models
        from .reaper import start_with_first_request

        chat_models()  # A bad CHAT_MODELS stops the start, not the first message.

        start_with_first_request()
        exit_after_reactor_stops()
