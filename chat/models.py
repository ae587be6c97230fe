import uuid

from django.conf import settings
from django.db import models


class ConversationQuerySet(models.QuerySet):
    def owned_by(self, user):
        """Only `user`'s conversations: another user's is never found (a 404, never a 403)."""
        return self.filter(owner=user)


class Conversation(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True, default="")
    # The id (CHAT_MODELS) of the model its last message asked for: the next one's default.
    model = models.CharField(max_length=100, blank=True, default="")
    # The chat id an AI SDK client generated for it (`POST /api/ai-sdk/chat`), unique per owner; "" for others.
    client_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["owner", "-updated_at", "-id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "client_id"], condition=~models.Q(client_id=""), name="conversation_unique_client_id"
            ),
        ]

    def __str__(self):
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    # The message this one follows: a tree, whose branches are edits (users' messages with one
    # parent) and versions (answers to one user message). Null for a first message.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    # An answer's reasoning, kept apart from its text: shown, never sent back to a model.
    reasoning = models.TextField(blank=True, default="")
    # The id an AI SDK client gave the user message (its UIMessage id), so that its edits find it; "" for others.
    client_id = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["conversation", "id"])]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"


class GenerationQuerySet(models.QuerySet):
    def owned_by(self, user):
        """Only the generations of `user`'s conversations: another user's is never found."""
        return self.filter(conversation__owner=user)


class Generation(models.Model):
    """One assistant answer being produced, detached from any HTTP request."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        STREAMING = "streaming"
        COMPLETE = "complete"
        INTERRUPTED = "interrupted"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.STREAMING)
    TERMINAL_STATUSES = (Status.COMPLETE, Status.INTERRUPTED, Status.FAILED, Status.CANCELLED)

    class InterruptReason(models.TextChoices):
        UPSTREAM_STALL = "upstream_stall"
        UPSTREAM_ERROR = "upstream_error"
        SERVER_SHUTDOWN = "server_shutdown"
        WORKER_LOST = "worker_lost"
        OPERATOR = "operator"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="generations")
    user_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="answers")
    # A continuation fills the same assistant message as the generation it continues.
    assistant_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="generations")
    continued_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="continuations"
    )
    # Posted with `multitask: "enqueue"` while this answer ran: it waits in the queue until that one ends.
    queued_behind = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=128, blank=True, default="")
    # Which answer to its user message this is (0 for the first): the simulated model varies by it.
    variant = models.PositiveIntegerField(default=0)
    response_format = models.CharField(max_length=16, default="text")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # Set by the model for a normal end: "stop", "length", "invalid_json".
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    interrupt_reason = models.CharField(max_length=32, choices=InterruptReason.choices, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # Sequence numbers of this generation's tokens run first_seq..last_seq;
    # last_seq is first_seq - 1 until a token is persisted.
    first_seq = models.PositiveIntegerField(default=1)
    last_seq = models.PositiveIntegerField(default=0)
    token_count = models.PositiveIntegerField(default=0)
    usage = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # The process running it ("host:pid:tag"); empty while it waits in the queue for a worker.
    worker = models.CharField(max_length=128, blank=True, default="")
    # Times a process started running it: 1, plus one per hand-on to another worker.
    runs = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # How long the model spent in its reasoning parts, over all its runs: the page's "Thought for 12 s".
    reasoning_ms = models.PositiveIntegerField(default=0)

    objects = GenerationQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["status", "heartbeat_at"]),
            # The workers' queue: only the unclaimed rows, oldest first.
            models.Index(fields=["created_at"], condition=models.Q(status="queued", worker=""), name="generation_queue"),
        ]

    def __str__(self):
        return f"Generation {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES


class Worker(models.Model):
    """A `manage.py run_generations` process, as its last heartbeat saw it: its load, and whether it drains."""

    name = models.CharField(max_length=128, primary_key=True)  # The `worker` of the generations it runs.
    capacity = models.PositiveIntegerField()
    running = models.PositiveIntegerField(default=0)
    draining = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} ({self.running}/{self.capacity})"


class TokenChunk(models.Model):
    """A persisted batch of consecutive tokens of one part, seq first_seq..last_seq."""

    class Part(models.TextChoices):
        TEXT = "text"
        REASONING = "reasoning"

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="chunks")
    first_seq = models.PositiveIntegerField()
    last_seq = models.PositiveIntegerField()
    # Which part of the answer the tokens belong to; every part shares the generation's sequence numbers.
    part = models.CharField(max_length=16, choices=Part.choices, default=Part.TEXT)
    # One string per token, so a resume can start inside a chunk.
    tokens = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["generation", "first_seq"], name="tokenchunk_unique_start"),
        ]
        indexes = [models.Index(fields=["generation", "last_seq"], name="tokenchunk_after_seq")]

    def __str__(self):
        return f"tokens {self.first_seq}..{self.last_seq}"

    @property
    def text(self) -> str:
        return "".join(self.tokens)


class StreamConnection(models.Model):
    """One client connection following a generation, kept for operators."""

    class Transport(models.TextChoices):
        SSE = "sse"
        WS = "ws"
        AI_SDK = "ai_sdk"

    class EndReason(models.TextChoices):
        COMPLETED = "completed"
        CLIENT_GONE = "client_gone"
        SERVER_SHUTDOWN = "server_shutdown"
        ERROR = "error"

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="connections")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    transport = models.CharField(max_length=8, choices=Transport.choices)
    resumed_from = models.PositiveIntegerField(null=True, blank=True)
    events_sent = models.PositiveIntegerField(default=0)
    tokens_sent = models.PositiveIntegerField(default=0)
    client_addr = models.CharField(max_length=64, blank=True, default="")
    user_agent = models.CharField(max_length=256, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True, default="")

    def __str__(self):
        return f"{self.transport} connection {self.pk}"


class ApiToken(models.Model):
    """A bearer token for API clients; only a hash of the key is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    # sha256 hex of the key. The key carries 256 random bits, so a fast hash is
    # as safe as a slow KDF (nothing to brute-force) and allows an indexed lookup.
    key_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the key, to tell tokens apart in the admin.
    prefix = models.CharField(max_length=16)
    name = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.prefix}… ({self.user})"


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key on a POST, and what that request created."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # sha256 of the operation and its canonical body: a reuse with another body is a conflict.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=201)
    message = models.ForeignKey(Message, null=True, on_delete=models.CASCADE, related_name="+")
    generation = models.ForeignKey(Generation, null=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotencykey_unique_per_user")]

    def __str__(self):
        return f"{self.key} ({self.user})"
