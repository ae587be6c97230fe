from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from ...api.auth import token_issue


class Command(BaseCommand):
    help = "Issue a bearer token for USER and print it (it is shown once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="manage.py", help="A label for the token, e.g. the device.")
        parser.add_argument(
            "--days", type=float, default=None, help="Days until it expires (default CHAT_API_TOKEN_TTL_DAYS; 0 = never)."
        )

    def handle(self, *args, username, name, days, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {username!r}.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive.")
        if days is not None and days < 0:
            raise CommandError("--days must not be negative.")
        ttl = None if days is None else (timedelta(days=days) if days > 0 else timedelta(0))
        raw_key, token = token_issue(user=user, name=name, ttl=ttl)
        expiry = f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "never expires"
        self.stderr.write(f"Token for {username} ({expiry}). Send it as: Authorization: Bearer <token>")
        self.stdout.write(raw_key)
