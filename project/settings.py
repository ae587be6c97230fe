"""Settings, all read from the environment with safe defaults for local use."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_optional_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# A public fallback key would let anyone forge sessions: outside DEBUG, no key, no start.
SECRET_KEY = os.environ.get("SECRET_KEY", "") or ("insecure-local-development-key" if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is not set. Set it (see docs/deploy.md), or DEBUG=1 for local development.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "csp",
    "channels",
    # Only for its templates and static files: the API docs then load Swagger UI from here, not a CDN.
    "ninja",
    "django_eventstream",
    "chat",
    "durable",
]

# Django's and django-csp's middleware, each subclassed to run its hooks on the
# event loop rather than a thread per hook (chat/server/middleware.py says why).
MIDDLEWARE = [
    "chat.server.middleware.SecurityMiddleware",
    "chat.server.middleware.CSPMiddleware",
    "chat.server.middleware.SessionMiddleware",
    "chat.server.middleware.CommonMiddleware",
    # Before anything reads request.POST: a form body that does not parse is a 400.
    "chat.server.middleware.form_body_middleware",
    "chat.server.middleware.admin_query_middleware",
    "chat.server.middleware.CsrfViewMiddleware",
    "chat.server.middleware.AuthenticationMiddleware",
    "chat.server.middleware.MessageMiddleware",
    "chat.server.middleware.XFrameOptionsMiddleware",
    "chat.server.middleware.method_not_allowed_middleware",
    # Last, as django-axes asks: it turns a locked-out login's answer into a 429.
    "axes.middleware.AxesMiddleware",
]
# Django's checks for its security, clickjacking and CSRF middleware look for its
# own paths; chat.W001-W003 check for the subclasses above instead.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default. WAL lets readers run beside the writer, the busy timeout
# makes writers queue instead of failing, and IMMEDIATE transactions take the
# write lock up front so two writers never deadlock upgrading a read lock.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        # Kept between units of work: every thread that holds one is a shared
        # database thread (chat/db.py), so connections are bounded by CHAT_DB_THREADS.
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("SQLITE_TEST_NAME") or None}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub: one PUBLISH per message, whatever the number of listeners,
            # and lossy like the hub it carries (followers fill gaps from the database).
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    # Single process only, as Channels documents; set REDIS_URL to scale out.
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Security ------------------------------------------------------------------

# Login throttling (django-axes) on every login path: /accounts/login/, the
# admin's and POST /api/auth/token (chat/api/lockout.py). Failures count per
# username and address together, so an attacker elsewhere cannot lock the
# user's own device out, and per address across usernames with a higher limit;
# they are stored in the database, shared by every process.
AUTHENTICATION_BACKENDS = ["chat.api.lockout.AxesBackend", "chat.api.lockout.PasswordBackend"]
AXES_HANDLER = "chat.api.lockout.LoginThrottle"
AXES_CLIENT_IP_CALLABLE = "chat.api.lockout.client_address"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("CHAT_LOGIN_FAILURE_LIMIT", 10)
# Failed logins from one address (an IPv6 /64) across usernames; 0 = no such limit.
CHAT_LOGIN_ADDRESS_FAILURE_LIMIT = env_int("CHAT_LOGIN_ADDRESS_FAILURE_LIMIT", 50)
# A username that logged in from an address this recently is held only by its own limit there.
CHAT_LOGIN_KNOWN_ADDRESS_DAYS = env_float("CHAT_LOGIN_KNOWN_ADDRESS_DAYS", 30)
AXES_COOLOFF_TIME = timedelta(seconds=env_float("CHAT_LOGIN_COOLOFF_S", 15 * 60))
AXES_RESET_ON_SUCCESS = True
# Attempts during a lockout do not extend it, so Retry-After (the cool-off) holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A row per successful login (AccessLog): the addresses each username is known at.
# `manage.py axes_reset_logs --age 30` drops the old ones.
AXES_DISABLE_ACCESS_LOG = False
AXES_LOCKOUT_CALLABLE = "chat.api.lockout.lockout_response"
# The address is REMOTE_ADDR: behind a proxy, run the server with --proxy-headers (docs/deploy.md).

# HTTPS. On unless DEBUG=1; HTTPS=0 is the explicit opt-out for a server
# reached over plain http (`make run`, the test servers on 127.0.0.1). Each
# setting below can also be set on its own.
HTTPS = env_bool("HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
# A year, the preload list's minimum; start lower (e.g. 300) on a new domain, since browsers remember it.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
# Behind a TLS-terminating proxy that sets it (and strips it from clients), e.g.
# "X-Forwarded-Proto: https"; without it, SECURE_SSL_REDIRECT would loop.
_proxy_ssl_header, _, _proxy_ssl_value = os.environ.get("SECURE_PROXY_SSL_HEADER", "").partition(":")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.strip().upper().replace("-", "_"), _proxy_ssl_value.strip())
    if _proxy_ssl_value.strip()
    else None
)
# Origins (scheme://host[:port]) allowed to post forms and open WebSockets besides the site's own.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Content-Security-Policy (django-csp): every script, style, image and
# connection comes from this origin; no inline script or style sheet, no framing. The chat
# page, the admin and /api/docs (Swagger UI from ninja's static files) work
# under it, which tests/browser/test_csp.py checks in Chromium.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        # Style attributes only (the admin's status colours and timeline positions);
        # they run no script, and any url() in them is still held to img-src.
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# A new password revokes the user's bearer tokens (chat/auth.py), whichever way it was set.
AUTH_PASSWORD_VALIDATORS = [{"NAME": "chat.api.auth.RevokeTokensOnPasswordChange"}]

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# Errors go to the console whatever DEBUG is: every unhandled one with its
# traceback, method and path (chat/server/logs.py), never a body or a credential.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_method": {"()": "chat.server.logs.RequestMethod"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "request": {"format": "%(asctime)s %(levelname)s %(name)s %(method)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "request_console": {"class": "logging.StreamHandler", "formatter": "request", "filters": ["request_method"]},
    },
    "loggers": {
        "chat": {"handlers": ["console"], "level": os.environ.get("CHAT_LOG_LEVEL", "INFO")},
        "django.request": {"handlers": ["request_console"], "level": "ERROR", "propagate": False},
    },
}

# --- Chat streaming -------------------------------------------------------

# Which LLM answers: "simulated" (offline default) or "openai" (any
# OpenAI-compatible /v1/chat/completions endpoint).
CHAT_LLM_PROVIDER = os.environ.get("CHAT_LLM_PROVIDER", "simulated")
# The models a user can pick, as JSON: [{"provider": "openai", "model": "gpt-4o-mini",
# "label": "GPT-4o mini"}, ...] (chat/llm/catalog.py). Unset: the one model of the settings here.
CHAT_MODELS = os.environ.get("CHAT_MODELS", "")
CHAT_SIMULATED_TOKENS_PER_S = env_float("CHAT_SIMULATED_TOKENS_PER_S", 40.0)
CHAT_SIMULATED_FIRST_TOKEN_DELAY_S = env_float("CHAT_SIMULATED_FIRST_TOKEN_DELAY_S", 0.3)
CHAT_SIMULATED_MAX_TOKENS = env_int("CHAT_SIMULATED_MAX_TOKENS", 160)
CHAT_SIMULATED_SEED = env_int("CHAT_SIMULATED_SEED", 0)
# Numbered points in a simulated answer (about 20 tokens each); raise for long answers.
CHAT_SIMULATED_POINTS = env_int("CHAT_SIMULATED_POINTS", 3)
# Fault knobs for demos, tests and chaos runs, each a token count; unset
# disables it. FAIL_AFTER=0 fails before the first token.
CHAT_SIMULATED_STALL_AFTER = env_optional_int("CHAT_SIMULATED_STALL_AFTER")
CHAT_SIMULATED_FAIL_AFTER = env_optional_int("CHAT_SIMULATED_FAIL_AFTER")
CHAT_SIMULATED_MALFORMED_AFTER = env_optional_int("CHAT_SIMULATED_MALFORMED_AFTER")

CHAT_OPENAI_BASE_URL = os.environ.get("CHAT_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
CHAT_OPENAI_API_KEY = os.environ.get("CHAT_OPENAI_API_KEY", "")
CHAT_OPENAI_MODEL = os.environ.get("CHAT_OPENAI_MODEL", "llama3.2")
CHAT_OPENAI_CONNECT_TIMEOUT_S = env_float("CHAT_OPENAI_CONNECT_TIMEOUT_S", 10.0)
CHAT_OPENAI_READ_TIMEOUT_S = env_float("CHAT_OPENAI_READ_TIMEOUT_S", 60.0)

# Anthropic's Messages API (Claude), for CHAT_MODELS entries with "provider": "anthropic".
CHAT_ANTHROPIC_BASE_URL = os.environ.get("CHAT_ANTHROPIC_BASE_URL", "https://api.anthropic.com")
CHAT_ANTHROPIC_API_KEY = os.environ.get("CHAT_ANTHROPIC_API_KEY", "")
# The API requires a limit on the answer's tokens (thinking included); a model's "max_tokens" overrides it.
CHAT_ANTHROPIC_MAX_TOKENS = env_int("CHAT_ANTHROPIC_MAX_TOKENS", 8192)
CHAT_ANTHROPIC_CONNECT_TIMEOUT_S = env_float("CHAT_ANTHROPIC_CONNECT_TIMEOUT_S", 10.0)
CHAT_ANTHROPIC_READ_TIMEOUT_S = env_float("CHAT_ANTHROPIC_READ_TIMEOUT_S", 60.0)
# The SDK retries a 408, 409, 429, 5xx or 529 (overloaded) before the answer starts, waiting
# the upstream's retry-after or 0.5-8 s; the runner's CHAT_UPSTREAM_STALL_S bounds the wait.
CHAT_ANTHROPIC_MAX_RETRIES = env_int("CHAT_ANTHROPIC_MAX_RETRIES", 2)

# No token from upstream for this long ends the generation as interrupted.
CHAT_UPSTREAM_STALL_S = env_float("CHAT_UPSTREAM_STALL_S", 10.0)
# Tokens are written to the database in batches: whichever comes first.
CHAT_FLUSH_INTERVAL_S = env_float("CHAT_FLUSH_INTERVAL_S", 0.05)
CHAT_FLUSH_MAX_TOKENS = env_int("CHAT_FLUSH_MAX_TOKENS", 64)
# A run at most this many tokens ahead of the database waits for it: a crash
# loses at most these of the tokens that clients saw, however slow the writes.
CHAT_MAX_UNWRITTEN_TOKENS = env_int("CHAT_MAX_UNWRITTEN_TOKENS", 128)
if CHAT_MAX_UNWRITTEN_TOKENS < 1:
    raise ImproperlyConfigured(f"CHAT_MAX_UNWRITTEN_TOKENS is {CHAT_MAX_UNWRITTEN_TOKENS}; it must be at least 1.")
# Each process refreshes the heartbeat of the generations it runs this often.
CHAT_HEARTBEAT_S = env_float("CHAT_HEARTBEAT_S", 2.0)
CHAT_HEARTBEAT_STALE_S = env_float("CHAT_HEARTBEAT_STALE_S", 30.0)
# Every process ends (interrupted / worker_lost) the generations whose heartbeat
# is older than CHAT_HEARTBEAT_STALE_S this often, from its first request on.
CHAT_REAPER_INTERVAL_S = env_float("CHAT_REAPER_INTERVAL_S", CHAT_HEARTBEAT_STALE_S / 2)
# `manage.py prune_streams` deletes the token chunks and connection rows of
# generations finished longer ago than this; message texts stay.
CHAT_RETENTION_DAYS = env_float("CHAT_RETENTION_DAYS", 30)

# A follower of a generation run by another process that hears nothing from
# the hub for this long checks the database, so a lost terminal event never
# leaves a client hanging. Quiet runs say `Alive` every heartbeat, so this is
# a few heartbeats: a waiting stream costs no query.
CHAT_STREAM_IDLE_CHECK_S = env_float("CHAT_STREAM_IDLE_CHECK_S", 2.5 * CHAT_HEARTBEAT_S)
# A `: keepalive` comment after this long without a token: below every proxy
# idle timeout, and short because it is how a client tells a dead connection
# (no byte for two periods and 0.5 s) from a quiet model within seconds. It costs only
# while no token flows (docs/client.md has the measurement).
CHAT_STREAM_KEEPALIVE_S = env_float("CHAT_STREAM_KEEPALIVE_S", 1.5)
# Reconnection delay suggested to EventSource clients.
CHAT_STREAM_RETRY_MS = env_int("CHAT_STREAM_RETRY_MS", 1000)
# Live tokens arriving within this window go out as one event; clients may
# pick their own with ?coalesce_ms= up to the maximum.
CHAT_STREAM_COALESCE_MS = env_int("CHAT_STREAM_COALESCE_MS", 0)
CHAT_STREAM_COALESCE_MAX_MS = env_int("CHAT_STREAM_COALESCE_MAX_MS", 1000)
# Per-subscriber backlog; past it the hub drops and the gap is read from the DB.
CHAT_SUBSCRIBER_QUEUE_SIZE = env_int("CHAT_SUBSCRIBER_QUEUE_SIZE", 1024)
# Tokens for other processes go out as one message per generation per this interval.
CHAT_HUB_BATCH_MS = env_float("CHAT_HUB_BATCH_MS", 5)
# Threads (each with one database connection) shared by a process's requests, and
# as many for its background database work: chat/db.py.
CHAT_DB_THREADS = env_int("CHAT_DB_THREADS", 6)
# Dotted path of the hub class; tests swap in a lossy one.
CHAT_HUB_CLASS = os.environ.get("CHAT_HUB_CLASS", "chat.streaming.hub.Hub")

CHAT_MAX_PROMPT_CHARS = env_int("CHAT_MAX_PROMPT_CHARS", 32000)
# How long a non-streaming request waits for the complete answer.
CHAT_NONSTREAM_TIMEOUT_S = env_float("CHAT_NONSTREAM_TIMEOUT_S", 300.0)

# --- Workers ------------------------------------------------------------------

# Who runs the answers (docs/deploy.md, "Processes"). "inprocess": the web
# process that took the POST, as a task (`make run` needs nothing else).
# "workers": web processes only queue them and serve streams; `manage.py
# run_generations` processes claim and run them, so a deploy of the web tier
# never interrupts an answer. Needs REDIS_URL (tokens reach the web processes
# through it) and, to wake workers without polling, PostgreSQL.
CHAT_RUNNER = os.environ.get("CHAT_RUNNER", "inprocess")
if CHAT_RUNNER not in {"inprocess", "workers"}:
    raise ImproperlyConfigured(f"CHAT_RUNNER is {CHAT_RUNNER!r}; it must be inprocess or workers.")
# Answers one worker runs at once; it claims no more than that.
CHAT_WORKER_CAPACITY = env_int("CHAT_WORKER_CAPACITY", 200)
# Claimed per transaction: small, so that workers woken together share a burst.
CHAT_WORKER_CLAIM_BATCH = env_int("CHAT_WORKER_CLAIM_BATCH", 10)
# Workers are woken by LISTEN/NOTIFY; this poll is only the safety net (a lost notice, SQLite).
CHAT_WORKER_POLL_S = env_float("CHAT_WORKER_POLL_S", 5.0)
# On SIGTERM a worker stops claiming and lets its answers run this long; the rest are handed on.
CHAT_WORKER_DRAIN_S = env_float("CHAT_WORKER_DRAIN_S", 30.0)
# A worker's answers still running at the drain timeout, or whose worker died,
# go back to the queue and another worker continues them in place (same id,
# seqs going on). Off: they end interrupted (server_shutdown / worker_lost).
CHAT_AUTO_CONTINUE = env_bool("CHAT_AUTO_CONTINUE", True)
# Runs per generation at most (the first and its hand-ons): an answer that
# kills its workers must not take them all down in turn.
CHAT_MAX_RUNS = env_int("CHAT_MAX_RUNS", 3)
# An answer no worker claimed within this long ends interrupted (worker_lost).
CHAT_QUEUE_TIMEOUT_S = env_float("CHAT_QUEUE_TIMEOUT_S", 120.0)
# In-process: the answers a stopping (or killed) process was running go on, in
# place, in the next process that starts (or any other one running), if it
# starts within this long of their last heartbeat; older ones end interrupted.
# 0: they end interrupted at once (server_shutdown / worker_lost).
CHAT_RESUME_INTERRUPTED_MAX_AGE_S = env_float("CHAT_RESUME_INTERRUPTED_MAX_AGE_S", 600.0)

# --- Mobile API ---------------------------------------------------------------

# Bearer tokens from POST /api/auth/token expire after this many days; 0 = never.
CHAT_API_TOKEN_TTL_DAYS = env_float("CHAT_API_TOKEN_TTL_DAYS", 30)
# Streams open at once (SSE, WebSocket, event channel, Durable Streams reads): per user
# (across processes with REDIS_URL, else per process) and per process; one more is a 429.
CHAT_MAX_STREAMS_PER_USER = env_int("CHAT_MAX_STREAMS_PER_USER", 30)
CHAT_MAX_STREAMS_PER_PROCESS = env_int("CHAT_MAX_STREAMS_PER_PROCESS", 5000)
# A process whose event loop runs this late (smoothed) refuses new streams and answers with 503. 0 = never.
CHAT_OVERLOAD_LAG_MS = env_float("CHAT_OVERLOAD_LAG_MS", 250)
# A process with an answer still being created (its rows, its launch) after this long refuses new answers
# with 503: a burst of answers waits for the database threads while the loop keeps time. 0 = never.
CHAT_OVERLOAD_START_MS = env_float("CHAT_OVERLOAD_START_MS", 2000)
# Answers being generated at once per user (queued or streaming); one more is a 429. 0 = no limit.
CHAT_MAX_ACTIVE_GENERATIONS_PER_USER = env_int("CHAT_MAX_ACTIVE_GENERATIONS_PER_USER", 10)
# Request bodies larger than this are refused with 413, from Content-Length before a byte is read
# (chat/handler.py); Durable Streams appends too, so DURABLE_MAX_APPEND_BYTES is at most this.
CHAT_MAX_BODY_BYTES = env_int("CHAT_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = CHAT_MAX_BODY_BYTES
# An Idempotency-Key is remembered this long (a day covers any sane retry schedule).
CHAT_IDEMPOTENCY_TTL_S = env_float("CHAT_IDEMPOTENCY_TTL_S", 24 * 3600)

# The per-user event channel (/api/events/, django-eventstream): events are
# stored in the database so that a client resumes by Last-Event-ID, even
# across restarts; with REDIS_URL, processes tell each other through Redis.
EVENTSTREAM_STORAGE_CLASS = "chat.transports.live.EventStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "chat.transports.live.UserChannelManager"
if REDIS_URL:
    from urllib.parse import unquote, urlparse

    _redis = urlparse(REDIS_URL)
    EVENTSTREAM_REDIS = {
        "host": _redis.hostname or "127.0.0.1",
        "port": _redis.port or 6379,
        "db": int(_redis.path.strip("/") or 0),
        "password": unquote(_redis.password) if _redis.password else None,
        "ssl": _redis.scheme == "rediss",
    }
# Prefix of the per-user channel names; give each deployment sharing one Redis its own.
CHAT_EVENTS_NAMESPACE = os.environ.get("CHAT_EVENTS_NAMESPACE", "")
