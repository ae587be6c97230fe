"""The project's settings plus Django's GZipMiddleware, to measure gzip on SSE.

GZipMiddleware compresses only for clients that send `Accept-Encoding: gzip`,
so one server serves the compressed and the plain runs side by side.
"""

from project.settings import *  # noqa: F403

MIDDLEWARE = ["django.middleware.gzip.GZipMiddleware", *MIDDLEWARE]  # noqa: F405
