"""One stable error shape for every endpoint: {"error": {"code", "message", "field"}}."""

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(error_body(error.code, error.message, error.field), status=error.status)
