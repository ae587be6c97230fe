"""The in-memory channel layer, with its expiry sweep throttled.

Channels' InMemoryChannelLayer sweeps every channel and every group for
expired messages on each receive() and group_send(): O(channels + groups) work
per token once many generations stream at once. Expiry is measured in
seconds (60 s messages, 24 h groups), so sweeping once a second loses nothing.
"""

import time

from channels.layers import InMemoryChannelLayer

SWEEP_INTERVAL_S = 1.0


class ThrottledInMemoryChannelLayer(InMemoryChannelLayer):
    _swept_at = 0.0

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_INTERVAL_S:
            self._swept_at = now
            super()._clean_expired()
