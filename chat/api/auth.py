"""Bearer tokens for API clients: issue, look up, revoke. Only a hash of each key is stored."""

import hashlib
import re
import secrets
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from ninja import security as ninja_security
from ninja.security import HttpBearer
from ninja.utils import check_csrf

from ..errors import ApiError
from ..models import ApiToken

# A recognisable prefix lets secret scanners and people spot a leaked key.
KEY_PREFIX = "chat_"
# A token's last use is written at most this often, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=5)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def token_issue(*, user, name: str = "", ttl: timedelta | None = None) -> tuple[str, ApiToken]:
    """Create a token for `user`; return the raw key (shown once, never stored) and the row.

    `ttl` defaults to CHAT_API_TOKEN_TTL_DAYS; a zero setting means no expiry.
    """
    if ttl is None and settings.CHAT_API_TOKEN_TTL_DAYS > 0:
        ttl = timedelta(days=settings.CHAT_API_TOKEN_TTL_DAYS)
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        key_hash=hash_key(raw_key),
        prefix=raw_key[: len(KEY_PREFIX) + 6],
        name=name[:100],
        expires_at=timezone.now() + ttl if ttl else None,
    )
    return raw_key, token


async def atoken_issue(*, user, name: str = "", ttl: timedelta | None = None) -> tuple[str, ApiToken]:
    return await sync_to_async(token_issue)(user=user, name=name, ttl=ttl)


async def token_for_key(raw_key: str) -> ApiToken | None:
    """The live token with this key, its user loaded; None if unknown, expired, revoked or the user inactive."""
    if not raw_key or len(raw_key) > 200:
        return None
    token = await ApiToken.objects.select_related("user").filter(key_hash=hash_key(raw_key)).afirst()
    now = timezone.now()
    if (
        token is None
        or token.revoked_at is not None
        or (token.expires_at is not None and token.expires_at <= now)
        or not token.user.is_active
    ):
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=now)
    return token


async def user_for_token(raw_key: str):
    """The user a bearer key belongs to, or None for an unknown, expired or revoked key."""
    token = await token_for_key(raw_key)
    return token.user if token else None


async def token_revoke(*, token: ApiToken) -> None:
    await ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).aupdate(revoked_at=timezone.now())


def live_tokens(user):
    """The user's tokens that still work: neither revoked nor expired; newest first."""
    now = timezone.now()
    return (
        ApiToken.objects.filter(user=user, revoked_at__isnull=True)
        .exclude(expires_at__lte=now)
        .order_by("-created_at", "-id")
    )


async def tokens_revoke(*, user, token_id: int | None = None) -> int:
    """Revoke one of the user's live tokens (by id), or all of them; return how many."""
    tokens = live_tokens(user)
    if token_id is not None:
        tokens = tokens.filter(pk=token_id)
    return await tokens.aupdate(revoked_at=timezone.now())


class RevokeTokensOnPasswordChange:
    """An AUTH_PASSWORD_VALIDATORS entry that validates nothing: its hook revokes the user's bearer tokens.

    Django calls `password_changed` after any save of a new password (the admin,
    `changepassword`, the password change page, `set_password()` then `save()`),
    and not when it only rehashes the same password. Other browser sessions end
    by themselves: Django checks each session's password hash on every request.
    """

    def validate(self, password, user=None):
        pass

    def get_help_text(self):
        return ""

    def password_changed(self, password, user=None):
        if user is not None and user.pk is not None:
            ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- Request authentication: bearer token or session ------------------------------


# RFC 7235 credentials: the scheme (any case), one or more spaces, a token68.
BEARER_CREDENTIALS = re.compile(r"bearer +([A-Za-z0-9._~+/-]+=*)", re.IGNORECASE)


def parse_bearer(header: str) -> str | None:
    """The key in an Authorization header value: None if the scheme is not Bearer, "" if the rest is malformed.

    The one parser of every endpoint (API, /api/events/, WebSocket): a
    malformed key is an invalid token everywhere, never a different answer.
    """
    if header.partition(" ")[0].lower() != "bearer":
        return None
    match = BEARER_CREDENTIALS.fullmatch(header)
    return match[1] if match else ""


def bearer_key(request) -> str | None:
    return parse_bearer(request.headers.get("Authorization", ""))


class BearerAuth(HttpBearer):
    """A bearer token, when sent, decides: a bad one is a 401 even if a session cookie came along."""

    def __call__(self, request):
        key = bearer_key(request)
        return None if key is None else self.authenticate(request, key)

    async def authenticate(self, request, token: str):
        api_token = await token_for_key(token)
        if api_token is None:
            raise ApiError(401, "invalid_token", "The bearer token is invalid, expired or revoked.", "Authorization")
        request.api_token = api_token
        return api_token.user


class SessionAuth(ninja_security.SessionAuth):
    """The Django session, with CSRF enforced on unsafe methods; read without blocking the event loop."""

    def _get_key(self, request):
        key = request.COOKIES.get(self.param_name)
        if key is None:
            return None  # No session: a 401, not a CSRF complaint.
        if check_csrf(request):
            raise ApiError(
                403,
                "csrf_failed",
                "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header, "
                "or authenticate with a bearer token instead.",
            )
        return key

    async def authenticate(self, request, key):
        if key is None:
            return None
        user = await request.auser()
        return user if user.is_authenticated else None


async def request_user(request) -> tuple[object | None, str | None]:
    """The user of a request outside the ninja API (bearer first, then session), or (None, error code)."""
    key = bearer_key(request)
    if key is not None:
        token = await token_for_key(key)
        return (token.user, None) if token else (None, "invalid_token")
    user = await request.auser()
    return (user, None) if user.is_authenticated else (None, "unauthenticated")
