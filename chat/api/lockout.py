"""Login throttling with django-axes, and password checks that never run on the event loop.

Three limits stand between a guesser and the password hasher (about 0.3 s of
CPU per try):

- per username and address together (AXES_FAILURE_LIMIT): the guesser's pair
  is locked, the user from their own address still logs in;
- per address across usernames (CHAT_LOGIN_ADDRESS_FAILURE_LIMIT, higher): a
  spray of random usernames from one address is locked too. A username that
  logged in from that address within CHAT_LOGIN_KNOWN_ADDRESS_DAYS is not held
  by this one (only by its pair limit), so a user who shares the address (an
  office, a carrier's NAT) keeps logging in;
- nginx's `limit_req` on the login routes (deploy/nginx.conf) bounds the rate.

A locked login is refused before any hashing. An IPv6 client counts by its
/64 network, the block one subscriber gets.
"""

import ipaddress
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from asgiref.sync import sync_to_async
from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt, AccessLog
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.db import connection
from django.db.models import Sum
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.html import escape

from ..errors import error_body

# Below the loop and the database threads, not far below: at nice 19 a login on a busy machine gets
# a fiftieth of a core's share and waits minutes (seen as 30 s timeouts with the CPU shared by tests).
PASSWORD_NICE = 5


def lower_priority() -> None:
    """Run this thread at PASSWORD_NICE (Linux schedules threads apart): the loop and the database threads come first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PASSWORD_NICE)
    except (AttributeError, OSError):
        pass  # Elsewhere the thread runs at the process's priority.


# Password hashes are computed here, one at a time per process and at a lower priority: a
# burst of logins waits its turn instead of taking the CPU from the streams and requests.
_password_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-password", initializer=lower_priority)


def client_address(request) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: REMOTE_ADDR, an IPv6 one reduced to its /64 network."""
    raw = request.META.get("REMOTE_ADDR") or ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw or None
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


class LoginThrottle(AxesDatabaseHandler):
    """AXES_HANDLER: axes' per (username, address) lockout, plus the per-address limit."""

    def is_locked(self, request, credentials=None) -> bool:
        return super().is_locked(request, credentials) or self.address_is_locked(request, credentials)

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        super().user_login_failed(sender, credentials, request, **kwargs)
        # The failure that reaches the address's limit is answered with the lockout, as axes does for a pair's.
        if request is not None and not request.axes_locked_out and self.address_is_locked(request, credentials):
            request.axes_locked_out = True
            request.axes_credentials = credentials

    def address_is_locked(self, request, credentials=None) -> bool:
        limit = settings.CHAT_LOGIN_ADDRESS_FAILURE_LIMIT
        address = request.axes_ip_address
        if not limit or address is None:
            return False
        since = timezone.now() - settings.AXES_COOLOFF_TIME
        recent = AccessAttempt.objects.filter(ip_address=address, attempt_time__gte=since)
        if (recent.aggregate(n=Sum("failures_since_start"))["n"] or 0) < limit:
            return False
        return not known_address(get_client_username(request, credentials), address)


def known_address(username: str | None, address: str) -> bool:
    """Whether this username logged in from this address lately (axes keeps a row per login)."""
    since = timezone.now() - timedelta(days=settings.CHAT_LOGIN_KNOWN_ADDRESS_DAYS)
    return bool(username) and AccessLog.objects.filter(username=username, ip_address=address, attempt_time__gte=since).exists()


class AxesBackend(AxesStandaloneBackend):
    """Axes' check, usable from `aauthenticate` (the token endpoint is async); axes has no async method."""

    async def aauthenticate(self, request, **credentials):
        return await sync_to_async(self.authenticate)(request, **credentials)


class PasswordBackend(ModelBackend):
    """Django's ModelBackend, whose async path hashes on the password thread, not on the event loop.

    Django 5.2's `ModelBackend.aauthenticate` computes the hash inline: each
    try stalled every stream of the process for its 0.3 s.
    """

    async def aauthenticate(self, request, **credentials):
        return await sync_to_async(self.authenticate_here, thread_sensitive=False, executor=_password_thread)(
            request, **credentials
        )

    def authenticate_here(self, request, **credentials):
        try:
            return self.authenticate(request, **credentials)
        finally:
            # Not kept: a process's database connections are its shared threads' (CHAT_DB_THREADS) and no more.
            connection.close()


def lockout_response(request, *args) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE for every login path: the token endpoint, /accounts/login/ and the admin's.

    Axes passes (request, response, credentials) or (request, credentials)
    depending on its sync or async path; neither extra is needed here.
    """
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    message = f"Too many failed logins from this address; try again in {seconds} s."
    if request.path.startswith("/api/"):
        response = JsonResponse(error_body("too_many_attempts", message), status=429)
    else:
        response = HttpResponse(f"<!doctype html><title>Too many attempts</title><p>{escape(message)}</p>", status=429)
    response["Retry-After"] = str(seconds)
    return response
