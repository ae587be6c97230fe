"""The client's pure rules, without a server: backoff bounds, Retry-After, the error classes."""

import email.utils
import time

import httpx
import pytest
from chat_client import (
    Config,
    Conflict,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from chat_client.errors import (
    RETRY_AFTER_CAP_S,
    AttemptFailed,
    api_error,
    error_from_response,
    retry_after_s,
)
from chat_client.retry import backoff_delay, retry_delay


def test_the_defaults_are_the_browser_clients():
    """static/chat/stream-client.js: STALL_MS 10 000, BACKOFF_CAP_MS 8 000, 3 attempts, FALLBACK_POLL_MS 1 000."""
    config = Config()
    assert (config.stall_s, config.backoff_cap_s, config.max_failed_attempts, config.fallback_poll_s) == (10, 8, 3, 1)


@pytest.mark.parametrize("attempt, bound", [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (10, 8.0)])
def test_backoff_is_exponential_capped_with_full_jitter(attempt, bound):
    assert backoff_delay(attempt, 0.5, 8.0, random=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, 0.5, 8.0, random=lambda: 0.999999) == pytest.approx(bound, rel=1e-5)


def test_retry_after_wins_over_a_shorter_backoff_with_up_to_half_again():
    asked = AttemptFailed("busy", retry_after=5)
    assert retry_delay(asked, 0, 0.5, 8.0, random=lambda: 0.0) == 5.0
    assert retry_delay(asked, 0, 0.5, 8.0, random=lambda: 0.999999) == pytest.approx(7.5, rel=1e-5)
    assert retry_delay(AttemptFailed("cut"), 0, 0.5, 8.0, random=lambda: 0.5) == 0.25


@pytest.mark.parametrize(
    "header, seconds",
    [(None, 0), ("", 0), ("5", 5), ("  12 ", 12), ("soon", 0), ("999999", RETRY_AFTER_CAP_S)],
)
def test_retry_after_in_seconds(header, seconds):
    assert retry_after_s(header) == seconds


def test_retry_after_as_an_http_date():
    now = time.time()
    assert retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0


@pytest.mark.parametrize(
    "status, cls, retryable",
    [(401, Unauthorized, False), (404, NotFound, False), (409, Conflict, False), (429, TooManyRequests, True), (503, ServiceUnavailable, True)],
)
def test_each_status_has_its_class_and_retry_rule(status, cls, retryable):
    error = api_error(status, {"code": "some_code", "message": "Why.", "field": "content"})
    assert type(error) is cls and (error.code, error.message, error.field, error.retryable) == ("some_code", "Why.", "content", retryable)


def test_a_response_without_the_error_shape_still_says_its_status():
    error = error_from_response(httpx.Response(502, text="<html>Bad gateway</html>"))
    assert (error.status, error.code, error.retryable) == (502, "", True) and "502" in str(error)
