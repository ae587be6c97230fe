"""Login throttling with django-axes: an async-capable backend, and the answer to a locked-out login."""

from asgiref.sync import sync_to_async
from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.html import escape

from ..errors import error_body


class AxesBackend(AxesStandaloneBackend):
    """Axes' check, usable from `aauthenticate` (the token endpoint is async); axes has no async method."""

    async def aauthenticate(self, request, **credentials):
        return await sync_to_async(self.authenticate)(request, **credentials)


def lockout_response(request, *args) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE for every login path: the token endpoint, /accounts/login/ and the admin's.

    Axes passes (request, response, credentials) or (request, credentials)
    depending on its sync or async path; neither extra is needed here.
    """
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    message = f"Too many failed logins for this username from this address; try again in {seconds} s."
    if request.path.startswith("/api/"):
        response = JsonResponse(error_body("too_many_attempts", message), status=429)
    else:
        response = HttpResponse(f"<!doctype html><title>Too many attempts</title><p>{escape(message)}</p>", status=429)
    response["Retry-After"] = str(seconds)
    return response
