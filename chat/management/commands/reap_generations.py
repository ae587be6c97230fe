from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand

from chat.actions.ends import generations_ended

from ...streaming.reaper import orphans, reap_orphans


class Command(BaseCommand):
    help = (
        "End (interrupted / worker_lost) the queued or streaming generations whose heartbeat is older than "
        "CHAT_HEARTBEAT_STALE_S, keeping their persisted tokens. Safe to run beside live servers and other reapers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List the orphans without ending them.")

    def handle(self, *args, dry_run: bool, **options):
        stale_s = settings.CHAT_HEARTBEAT_STALE_S
        if dry_run:
            found = list(orphans().values_list("pk", "status", "worker", "heartbeat_at"))
            for pk, status, worker, heartbeat_at in found:
                self.stdout.write(f"{pk} {status} worker={worker or '-'} heartbeat={heartbeat_at or '-'}")
            self.stdout.write(f"{len(found)} orphaned generation(s) (no heartbeat for {stale_s:g} s); none ended.")
            return
        reaped = reap_orphans()
        if reaped:
            async_to_sync(generations_ended)(reaped)
        for generation in reaped:
            self.stdout.write(f"{generation.id} interrupted (worker_lost) at seq {generation.last_seq}")
        self.stdout.write(f"Reaped {len(reaped)} orphaned generation(s) (no heartbeat for {stale_s:g} s).")
