"""A durable stream: its settings and state, its messages, and its idempotent producers."""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class Stream(models.Model):
    """One stream of the general namespace. Paths are per owner: a user sees only their own streams."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="durable_streams")
    path = models.CharField(max_length=512)
    content_type = models.CharField(max_length=255)
    ttl_s = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Reads and writes (not HEAD) slide a TTL stream's expiry from here.
    touched_at = models.DateTimeField(default=timezone.now)
    # Messages are numbered 1, 2, ...; `tail` is the last one's number (0: none yet).
    tail = models.BigIntegerField(default=0)
    # The sizes of its stored messages, summed: what counts toward the owner's DURABLE_MAX_BYTES_PER_USER.
    stored_bytes = models.BigIntegerField(default=0)
    # Messages up to this number were dropped by retention: reading from before it is a 410.
    pruned_through = models.BigIntegerField(default=0)
    last_stream_seq = models.CharField(max_length=255, blank=True, default="")
    closed = models.BooleanField(default=False)
    # The producer request that closed the stream, so that its retry is a duplicate, not a conflict.
    closed_by = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "path"], name="durable_stream_owner_path")]

    def __str__(self):
        return f"{self.path} ({self.owner_id})"

    @property
    def group(self) -> str:
        """The hub group whose members hear of this stream's appends, closure and deletion."""
        return f"ds.{self.pk}"

    def expiry(self):
        if self.expires_at is not None:
            return self.expires_at
        if self.ttl_s is not None:
            return self.touched_at + timedelta(seconds=self.ttl_s)
        return None

    def is_expired(self, now=None) -> bool:
        expiry = self.expiry()
        return expiry is not None and expiry <= (now or timezone.now())


class StreamMessage(models.Model):
    """One append (or, for application/json, one message of it), stored as the bytes readers get."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField()
    data = models.BinaryField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "seq"], name="durable_message_stream_seq")]


class Producer(models.Model):
    """An idempotent producer's epoch and last accepted sequence number on one stream (protocol 5.2.1)."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="producers")
    producer_id = models.CharField(max_length=255)
    epoch = models.BigIntegerField()
    last_seq = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "producer_id"], name="durable_producer_stream_id")]
