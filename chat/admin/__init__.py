"""The operator's admin: what happened to a stream, to whom, how far it got, whether the client came back,
and what to do about it now. Staff only, like all of the Django admin. See docs/admin.md.
"""

from . import conversations, generations, records, tokens  # noqa: F401  (each registers its ModelAdmins)
