"""A hub that loses messages on purpose, as a pub/sub layer does under load."""

from chat.streaming.events import End, Token
from chat.streaming.hub import Hub


class LossyHub(Hub):
    """Drops every third token and every end event, for local subscribers and other processes alike."""

    @staticmethod
    def lost(event) -> bool:
        return isinstance(event, End) or (isinstance(event, Token) and event.last_seq % 3 == 0)

    def publish_nowait(self, group, event):
        if not self.lost(event):
            super().publish_nowait(group, event)

    async def publish(self, group, event):
        if not self.lost(event):
            await super().publish(group, event)
