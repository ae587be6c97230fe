"""A hub that loses messages on purpose, as channels' group_send does under load."""

from chat.events import End, Token
from chat.hub import Hub


class LossyHub(Hub):
    """Drops every third token and every end event before they reach the layer."""

    async def publish(self, group, event):
        if isinstance(event, End) or (isinstance(event, Token) and event.last_seq % 3 == 0):
            return
        await super().publish(group, event)
