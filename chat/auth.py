"""Bearer tokens for API clients: issue, look up, revoke. Only a hash of each key is stored."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import ApiToken

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
    from asgiref.sync import sync_to_async

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
