import re
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat.actions import streams_prune

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(value: str) -> timedelta:
    """'30d', '12h', '90m', '45s', '2w' (a bare number is days)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not match:
        raise CommandError(
            f"--older-than must be a number with an optional unit s, m, h, d or w (for example 30d or 12h), got {value!r}."
        )
    number, unit = match.groups()
    return timedelta(**{UNITS[unit or "d"]: float(number)})


class Command(BaseCommand):
    help = (
        "Delete the token chunks and connection rows of generations that finished longer ago than the retention "
        "(CHAT_RETENTION_DAYS, default 30 days). Message texts stay; a client that resumes such a generation gets "
        "its whole text in one `snapshot` event."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            help="Age of the finished generations to prune, e.g. 30d, 12h, 90m; default CHAT_RETENTION_DAYS days.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args, older_than: str | None, dry_run: bool, **options):
        if older_than is None:
            older_than = f"{settings.CHAT_RETENTION_DAYS:g}d"
        counts = streams_prune(older_than=parse_age(older_than), dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {counts['chunks']} token chunk(s) and {counts['connections']} connection row(s) "
            f"of {counts['generations']} generation(s) finished more than {older_than} ago, "
            f"and {counts['keys']} expired idempotency key(s)."
        )
