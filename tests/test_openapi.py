"""Schemathesis against the spec the server serves, on every backend: no server errors, and answers that match the spec.

Bounded: at most MAX_EXAMPLES generated requests per operation (plus the
explicit examples and negative cases; CHAT_FUZZ_EXAMPLES raises it, as `make
chaos` does), each answered by a server whose simulated model is fast, and
the whole run under a time limit.
"""

import json
import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.server import USERS

MAX_EXAMPLES = int(os.environ.get("CHAT_FUZZ_EXAMPLES", "25"))
# Fast, short answers: the non-streaming fallback waits for them.
FAST = {
    "CHAT_SIMULATED_TOKENS_PER_S": "2000",
    "CHAT_SIMULATED_MAX_TOKENS": "12",
    "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": "0",
    # Fuzzed logins fail by the hundred; test_login_throttle.py covers the limits.
    "CHAT_LOGIN_FAILURE_LIMIT": "1000000",
    "CHAT_LOGIN_ADDRESS_FAILURE_LIMIT": "0",
}


# A turn of an AI SDK chat, as DefaultChatTransport sends it.
AI_SDK_CHAT = {
    "id": "fuzzed-chat",
    "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello"}]}],
    "trigger": "submit-message",
}


# What is checked is the answer, never its speed: a call is given this long, as on a machine whose
# cores other test servers share (a token revocation once took over 30 s there, and 0.05 s alone).
CALL_TIMEOUT_S = 120


def issue_token(server, username: str = "alice") -> str:
    response = httpx.post(
        f"{server.url}/api/auth/token",
        json={"username": username, "password": USERS[username]},
        timeout=CALL_TIMEOUT_S,
    )
    response.raise_for_status()
    return response.json()["token"]


# These revoke the token they are sent with, or all of its user's: each case sends a fresh one of bob's.
SELF_REVOKING = {"DELETE /api/auth/token", "DELETE /api/auth/tokens", "DELETE /api/auth/tokens/{token_id}"}
# Stands for "the id of the token this case is sent with" in the positive cases' path parameters.
OWN_TOKEN_ID = 1


def own_token_id(server, bearer: str) -> int:
    tokens = httpx.get(f"{server.url}/api/auth/tokens", headers={"Authorization": f"Bearer {bearer}"}).json()
    return next(token["id"] for token in tokens if token["current"])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live_api(request, start_server):
    """A fast server, alice's token, and ids of a conversation and a finished generation of hers."""
    server = start_server(request.param, **FAST)
    token = issue_token(server)
    headers = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{server.url}/api/conversations", json={"title": "fuzzed"}, headers=headers).json()
    answer = httpx.post(
        f"{server.url}/api/conversations/{conversation['id']}/messages",
        json={"content": "Hello", "stream": False},
        headers=headers,
        timeout=30,
    ).json()
    chat = httpx.post(f"{server.url}/api/ai-sdk/chat", json=AI_SDK_CHAT, headers=headers, timeout=30)
    assert chat.status_code == 200, chat.text
    real_ids = {
        "conversation_id": conversation["id"],
        "generation_id": answer["generation"]["id"],
        "chat_id": AI_SDK_CHAT["id"],
        "token_id": OWN_TOKEN_ID,
    }
    return server, token, real_ids


@pytest.mark.timeout(600 + 12 * MAX_EXAMPLES)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_spec(live_api, mode):
    """Every operation, with valid (positive) and invalid (negative) input, authenticated as alice.

    Positive runs also use ids of alice's real objects, so that success
    answers are checked against the spec too; deletes run last.
    """
    server, token, real_ids = live_api
    schema = schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=lambda o: o.method == "delete")
    failures, calls = {}, []
    for operation in operations:
        strategies = [operation.as_strategy(generation_mode=mode)]
        fixed = {name: value for name, value in real_ids.items() if f"{{{name}}}" in operation.path}
        if fixed and mode == GenerationMode.POSITIVE:
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        if operation.label == "POST /api/auth/token" and mode == GenerationMode.POSITIVE:
            strategies.append(operation.as_strategy(body={"username": "alice", "password": USERS["alice"]}))
        if operation.label == "POST /api/ai-sdk/chat" and mode == GenerationMode.POSITIVE:
            strategies.append(operation.as_strategy(body=AI_SDK_CHAT))

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def exercise(case):
            # Revoking must not revoke the token every other case uses.
            bearer = issue_token(server, "bob") if case.operation.label in SELF_REVOKING else token
            if (case.path_parameters or {}).get("token_id") == OWN_TOKEN_ID:
                case.path_parameters["token_id"] = own_token_id(server, bearer)
            # A cursor is opaque: the spec cannot tell a given-out one from any other string; nor can it
            # say which ids are answers in the conversation, as a parent_id must be.
            # An AI SDK chat turn's new message is the last of `messages`, a user message with a text part:
            # a rule of the protocol that JSON Schema cannot state.
            opaque = (
                (case.query or {}).get("cursor")
                or "parent_id" in (case.body if isinstance(case.body, dict) else {})
                or case.operation.label == "POST /api/ai-sdk/chat"
            )
            excluded = [positive_data_acceptance] if opaque else []
            response = case.call_and_validate(
                base_url=server.url,
                headers={"Authorization": f"Bearer {bearer}"},
                excluded_checks=excluded,
                timeout=CALL_TIMEOUT_S,
            )
            calls.append((case.operation.label, response.status_code))

        try:
            exercise()
        except Exception as exc:  # One report per operation, then the next one.
            failures[operation.label] = exc
    assert not failures, "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())
    assert len(operations) >= 10, "the spec lists every operation"
    assert len(calls) >= 5 * len(operations), f"too few requests were made: {len(calls)}"
    if mode == GenerationMode.POSITIVE:
        succeeded = {label for label, status in calls if status < 300}
        assert len(succeeded) == len(operations), f"success answers checked only for {sorted(succeeded)}"


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    assert not duplicated, f"duplicated keys {duplicated} in an object with keys {keys}"
    return dict(pairs)


def test_served_spec_has_no_duplicate_keys(start_server):
    """A key twice in one object is legal JSON to Python but a parser error to Swagger UI's YAML reader."""
    server = start_server("sqlite")
    response = httpx.get(f"{server.url}/api/openapi.json")
    assert response.status_code == 200
    spec = json.loads(response.text, object_pairs_hook=no_duplicate_keys)
    stream = spec["paths"]["/api/generations/{generation_id}/stream"]["get"]
    assert stream["responses"]["200"]["content"] == {"text/event-stream": {}}
