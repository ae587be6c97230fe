"""Errors: the API's one error shape as exceptions, one class per status a caller handles differently."""

import email.utils
import time

# A Retry-After longer than this is taken as this: a wrong header must not park a client.
RETRY_AFTER_CAP_S = 300.0


class ChatError(Exception):
    """Anything this client raises on purpose."""


class AttemptFailed(ChatError):
    """One connection attempt failed; `retryable` is false for what asking again cannot fix."""

    def __init__(self, reason: str, *, retryable: bool = True, retry_after: float = 0.0):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked for, 0 if it did not


class ApiError(AttemptFailed):
    """The server refused a request: `status`, and its `{"error": {"code", "message", "field"}}`."""

    status = 0

    def __init__(self, status: int, code: str, message: str, field: str | None = None, retry_after: float = 0.0):
        # A 4xx will not get better by asking again, except a timeout or a rate limit.
        retryable = status >= 500 or status in (408, 429)
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}" if self.code else f"{self.status}: {self.message}"


class BadRequest(ApiError):
    """400: the request is invalid (`field` says which part)."""


class Unauthorized(ApiError):
    """401: no token, or an expired, revoked or unknown one (`invalid_token`), or a wrong password."""


class Forbidden(ApiError):
    """403."""


class NotFound(ApiError):
    """404: no such conversation or generation, or another user's."""


class Conflict(ApiError):
    """409: an idempotency key reused with another body, a generation that cannot be continued or regenerated."""


class PayloadTooLarge(ApiError):
    """413: the request body is over the server's limit."""


class TooManyRequests(ApiError):
    """429: too many answers or streams at once, or failed logins; `retry_after` says when to come back."""


class ServiceUnavailable(ApiError):
    """503: the server process is overloaded; `retry_after` says when to come back."""


class StreamFailed(ChatError):
    """Following an answer gave up: `give_up_after_s` passed without progress."""


BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def api_error(status: int, error: dict | None, retry_after: float = 0.0) -> ApiError:
    """The exception for a status and the body's `error` object (if it had one)."""
    error = error or {}
    message = error.get("message") or f"The server answered {status}."
    return BY_STATUS.get(status, ApiError)(status, error.get("code") or "", message, error.get("field"), retry_after)


def retry_after_s(value: str | None, now: float | None = None) -> float:
    """How long a Retry-After header asks to wait (seconds or an HTTP date), capped; 0 if it does not say."""
    value = (value or "").strip()
    if not value:
        return 0.0
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def error_from_response(response) -> ApiError:
    """The exception a non-2xx httpx response stands for; its body must have been read."""
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    return api_error(response.status_code, error if isinstance(error, dict) else None, retry_after_s(response.headers.get("Retry-After")))
