"""One stable error shape for every endpoint: {"error": {"code", "message", "field"}}."""

class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, *, retry_after: int | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after  # Seconds, sent as Retry-After (429, 503).


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}
