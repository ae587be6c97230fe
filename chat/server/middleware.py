"""Middleware of the chat app."""

import csp.middleware
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.core import checks
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpResponseBadRequest, JsonResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.middleware import clickjacking, common, csrf, security
from django.utils.decorators import sync_and_async_middleware

from ..errors import error_body


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


def refusing(check):
    """Middleware from `check(request)`: the response it returns, if any, refuses the request before the view."""

    @sync_and_async_middleware
    def factory(get_response):
        if iscoroutinefunction(get_response):

            async def middleware(request):
                return check(request) or await get_response(request)

        else:

            def middleware(request):
                return check(request) or get_response(request)

        return middleware

    factory.__doc__ = check.__doc__
    return factory


FORM_CONTENT_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@refusing
def form_body_middleware(request):
    """A form body that does not parse as its Content-Type says is a 400 here, before any view reads it.

    The JSON API takes no form bodies at all. Later readers of `request.POST`
    (the CSRF check, django-axes counting a failed login) then get the parsed
    form: a malformed one can no longer make them raise, which once let a
    failed login go uncounted.
    """
    if request.method not in ("POST", "PUT", "PATCH") or request.content_type not in FORM_CONTENT_TYPES:
        return None
    if request.path.startswith("/api/"):
        message = f"The API reads JSON bodies, not {request.content_type}: send Content-Type: application/json."
        return JsonResponse(error_body("malformed_body", message), status=400)
    try:
        request.body  # noqa: B018 - kept, so that the form parser and any later reader share it
        request.POST  # noqa: B018 - parsed (and cached) now
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return JsonResponse(error_body("body_too_large", f"The request body is larger than {limit} bytes."), status=413)
    except (MultiPartParserError, SuspiciousOperation, UnreadablePostError) as error:
        message = f"The body is not valid {request.content_type}: {error}"
        return JsonResponse(error_body("malformed_body", message), status=400)
    return None


@refusing
def admin_query_middleware(request):
    """A NUL in the admin's query string is a 400: PostgreSQL refuses it in a list's filter or search.

    The admin's forms refuse NUL already (Django's ProhibitNullCharactersValidator).
    """
    if request.path.startswith("/admin/") and any("\x00" in key + value for key, value in request.GET.items()):
        return HttpResponseBadRequest("A NUL character is not allowed in the query string.", content_type="text/plain")
    return None


# --- Django's own middleware, run on the event loop ----------------------------------------
#
# Under ASGI, Django runs each hook of a MiddlewareMixin middleware through
# sync_to_async: a thread hop for every process_request, process_view and
# process_response, about 14 per request with the stack in settings.MIDDLEWARE,
# most of the fixed cost of an answer. The hooks below do no I/O (Django would
# raise SynchronousOnlyOperation if one touched the database on the loop), so
# they run inline; the two that may write (a modified session, stored messages)
# still go to a thread, and only when they have something to write.


class OnLoop:
    """Mixed in before a MiddlewareMixin class whose process_request and process_response do no I/O."""

    async def __acall__(self, request):
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_needs_io(request):
                return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
            response = self.process_response(request, response)
        return response

    def response_needs_io(self, request) -> bool:
        return False


class SecurityMiddleware(OnLoop, security.SecurityMiddleware):
    pass


class CSPMiddleware(OnLoop, csp.middleware.CSPMiddleware):
    pass


class SessionMiddleware(OnLoop, sessions.SessionMiddleware):
    def response_needs_io(self, request) -> bool:
        # process_response saves the session (a database write) only then.
        return request.session.modified or settings.SESSION_SAVE_EVERY_REQUEST


class CommonMiddleware(OnLoop, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(OnLoop, csrf.CsrfViewMiddleware):
    # Reads the cookie and the already-received body; CSRF_USE_SESSIONS (which would read the session) is off.
    async def process_view(self, request, callback, callback_args, callback_kwargs):
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(OnLoop, auth.AuthenticationMiddleware):
    pass  # request.user and request.auser are lazy: nothing is read here.


class MessageMiddleware(OnLoop, messages.MessageMiddleware):
    def response_needs_io(self, request) -> bool:
        # Storing messages may load and write the session; untouched, there is nothing to store.
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class XFrameOptionsMiddleware(OnLoop, clickjacking.XFrameOptionsMiddleware):
    pass


# Django's deploy checks security.W001-W003 look for its own paths in MIDDLEWARE,
# so settings silence them; these check for the subclasses above instead.
REQUIRED_MIDDLEWARE = {
    "chat.W001": SecurityMiddleware,
    "chat.W002": XFrameOptionsMiddleware,
    "chat.W003": CsrfViewMiddleware,
}


@checks.register(checks.Tags.security, deploy=True)
def check_security_middleware(app_configs, **kwargs):
    missing = []
    for check_id, cls in REQUIRED_MIDDLEWARE.items():
        django = cls.__mro__[2]
        path, django_path = (
            f"{cls.__module__}.{cls.__name__}",
            f"{django.__module__}.{django.__name__}",
        )
        if path not in settings.MIDDLEWARE and django_path not in settings.MIDDLEWARE:
            missing.append(
                checks.Warning(
                    f"Neither {path} nor {django_path} is in MIDDLEWARE.",
                    hint=f"Add {path}: {django_path}, run on the event loop.",
                    id=check_id,
                )
            )
    return missing
