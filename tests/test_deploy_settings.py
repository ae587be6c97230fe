"""Deployment settings: `check --deploy` is clean in production, no start without a key, HTTPS enforced, a CSP sent."""

import os
import subprocess
import sys

import httpx
import pytest

from tests.support.server import ROOT

# What a production deployment sets: a real key and its host name; HTTPS stays on (the default when DEBUG=0).
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "project.settings",
    "DEBUG": "0",
    "SECRET_KEY": "x7Gq2vLr9TnW4eKcY8pZs1HbJm6UaD3fXoQiN5tRwVyEgCk0lMhBzS",
    "ALLOWED_HOSTS": "chat.example.com",
}
# The environment of this test process minus what would override production's defaults.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_")) and k not in ("HTTPS", "SECRET_KEY", "DEBUG")}


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_passes_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("check_id", "ours", "djangos"),
    [
        ("chat.W001", "chat.server.middleware.SecurityMiddleware", "django.middleware.security.SecurityMiddleware"),
        ("chat.W002", "chat.server.middleware.XFrameOptionsMiddleware", "django.middleware.clickjacking.XFrameOptionsMiddleware"),
        ("chat.W003", "chat.server.middleware.CsrfViewMiddleware", "django.middleware.csrf.CsrfViewMiddleware"),
    ],
)
def test_deploy_check_wants_the_security_middleware_djangos_checks_no_longer_find(settings, check_id, ours, djangos):
    """Django's W001-W003 are silenced (they look for its own paths): ours still catches a missing one."""
    from chat.server.middleware import check_security_middleware

    assert check_security_middleware(None) == []
    settings.MIDDLEWARE = [djangos if path == ours else path for path in settings.MIDDLEWARE]
    assert check_security_middleware(None) == []  # Django's own class does the job too.
    settings.MIDDLEWARE = [path for path in settings.MIDDLEWARE if path != djangos]
    assert [warning.id for warning in check_security_middleware(None)] == [check_id]


@pytest.mark.parametrize("key", [None, ""])
def test_no_start_without_a_secret_key_outside_debug(key):
    env = {name: value for name, value in PRODUCTION.items() if name != "SECRET_KEY"}
    if key is not None:
        env["SECRET_KEY"] = key
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_runs_without_a_key():
    result = manage("check", env={**PRODUCTION, "DEBUG": "1", "SECRET_KEY": ""})
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def https_server(start_server):
    """A production-configured server behind a (simulated) TLS proxy that sets X-Forwarded-Proto."""
    return start_server(
        "sqlite", HTTPS="1", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https", SECRET_KEY=PRODUCTION["SECRET_KEY"]
    )


async def test_plain_http_is_redirected_to_https(https_server):
    async with httpx.AsyncClient(base_url=https_server.url) as http:
        response = await http.get("/accounts/login/?next=/")
    assert response.status_code == 301
    assert response.headers["location"] == f"https://127.0.0.1:{https_server.port}/accounts/login/?next=/"


async def test_https_answers_carry_hsts_secure_cookies_and_a_csp(https_server):
    async with httpx.AsyncClient(base_url=https_server.url, headers={"X-Forwarded-Proto": "https"}) as http:
        response = await http.get("/accounts/login/")
    assert response.status_code == 200
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("csrftoken=") and "; Secure" in cookie
    policy = dict(d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    # The one relaxation: style attributes, which run no script.
    assert [d for d, sources in policy.items() if "unsafe" in sources] == ["style-src-attr"]


async def test_local_http_servers_opt_out(start_server):
    """HTTPS=0 (make run, the test servers): plain http works, cookies are not Secure-only."""
    server = start_server("sqlite")
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/accounts/login/")
    assert response.status_code == 200
    assert "strict-transport-security" not in response.headers
    assert "; Secure" not in response.headers["set-cookie"]
    assert "content-security-policy" in response.headers
