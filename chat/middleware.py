"""Middleware of the chat app."""

from asgiref.sync import iscoroutinefunction
from django.http import JsonResponse
from django.utils.decorators import sync_and_async_middleware

from .errors import error_body


@sync_and_async_middleware
def method_not_allowed_middleware(get_response):
    """ninja answers a wrong method with a bare-text 405: give it the API's error shape (and keep `Allow`)."""

    def reshape(request, response):
        if response.status_code == 405 and request.path.startswith("/api/") and not isinstance(response, JsonResponse):
            allowed = response.get("Allow", "")
            response = JsonResponse(error_body("method_not_allowed", f"Use {allowed} on this path."), status=405)
            response["Allow"] = allowed
        return response

    if iscoroutinefunction(get_response):

        async def middleware(request):
            return reshape(request, await get_response(request))

    else:

        def middleware(request):
            return reshape(request, get_response(request))

    return middleware
