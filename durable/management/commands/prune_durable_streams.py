"""Delete expired durable streams, and messages older than DURABLE_RETENTION_DAYS (reading from before them is a 410)."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from durable.conf import setting
from durable.storage import prune


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        now = timezone.now()
        days = setting("DURABLE_RETENTION_DAYS")
        streams, messages = prune(now, now - timedelta(days=days) if days > 0 else None)
        self.stdout.write(f"Deleted {streams} expired streams and {messages} messages past retention.")
