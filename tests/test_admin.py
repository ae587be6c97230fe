"""The operator's admin: pages in every state, staff only, the overview's counts and the actions.

Retry and continue start real generations, so their success paths run against a
real server in tests/test_continue.py; here they are refused before anything starts.
"""

import re
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from chat.models import Generation, Message, StreamConnection, TokenChunk
from tests.support import factories

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/chat/generation/"
OVERVIEW = "/admin/chat/generation/overview/"


def change_url(generation) -> str:
    return reverse("admin:chat_generation_change", args=[generation.pk])


def act(client, action: str, *generations, follow=True):
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [str(g.pk) for g in generations]}, follow=follow
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- Pages ------------------------------------------------------------------------


def test_changelist_shows_every_state_with_counts(admin_client):
    states = factories.every_state()
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    rows = {row.pk: row for row in response.context["cl"].result_list}
    assert set(rows) == {g.pk for g in states.values()}
    assert rows[states["complete"].pk].connection_count == 2
    assert rows[states["complete"].pk].reconnect_count == 1
    assert rows[states["streaming"].pk].reconnect_count == 0
    html = response.content.decode()
    for status in ("queued", "streaming", "complete", "interrupted", "failed", "cancelled"):
        assert f">{status}</span>" in html
    assert "worker_lost" in html and "alice" in html and "simulated / simulated-1" in html


@pytest.mark.parametrize(
    "query, expected",
    [
        ("status__exact=interrupted", {"upstream_stall", "upstream_error", "server_shutdown", "worker_lost", "operator"}),
        ("interrupt_reason__exact=worker_lost", {"worker_lost"}),
        ("provider=simulated", None),
        ("reconnects=yes", {"complete", "upstream_error"}),
        ("heartbeat=stale", {"queued"}),
        ("q=alice", None),
        ("q=resume+a+stream", None),
    ],
)
def test_changelist_filters_and_search(admin_client, query, expected):
    states = factories.every_state()
    factories.generation(factories.user("bob"), prompt="Something else entirely", age_s=1, provider="openai")
    response = admin_client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    found = {row.pk for row in response.context["cl"].result_list}
    wanted = set(states) if expected is None else expected
    assert found == {states[name].pk for name in wanted}


def test_stale_filter_follows_the_threshold(admin_client, settings):
    """The queued generation never beat and is 2 min old: stale at 30 s, not at 10 min."""
    settings.CHAT_HEARTBEAT_STALE_S = 600
    factories.every_state()
    assert admin_client.get(f"{CHANGELIST}?heartbeat=stale").context["cl"].result_count == 0


def test_search_by_generation_id(admin_client):
    states = factories.every_state()
    target = states["upstream_error"]
    response = admin_client.get(CHANGELIST, {"q": str(target.pk)})
    assert [row.pk for row in response.context["cl"].result_list] == [target.pk]
    chunks = admin_client.get("/admin/chat/tokenchunk/", {"q": str(target.pk)})
    assert {c.generation_id for c in chunks.context["cl"].result_list} == {target.pk}


def test_had_reconnects_filter_with_a_date(admin_client):
    factories.every_state()
    response = admin_client.get(f"{CHANGELIST}?reconnects=no&created_at__gte=2000-01-01T00:00:00%2B00:00")
    assert response.status_code == 200
    assert all(row.reconnect_count == 0 for row in response.context["cl"].result_list)


def test_changelist_has_no_per_row_queries(admin_client, django_assert_max_num_queries):
    for _ in range(3):
        factories.every_state()
    with django_assert_max_num_queries(12):
        assert admin_client.get(CHANGELIST).status_code == 200


STATES = [
    "queued", "streaming", "complete", "upstream_stall", "upstream_error", "server_shutdown", "worker_lost",
    "operator", "failed", "cancelled",
]


@pytest.mark.parametrize("state", STATES)
def test_detail_page_renders_in_every_state(admin_client, state):
    generation = factories.every_state()[state]
    response = admin_client.get(change_url(generation))
    assert response.status_code == 200
    html = response.content.decode()
    assert "How do I resume a stream?" in html, "the prompt"
    assert f"/?generation={generation.pk}" in html, "the link to the chat page"
    assert response.context["summary"].startswith("alice's answer")
    assert 'name="_save"' not in html, "read-only: no save button"
    if generation.token_count:
        assert len(response.context["timeline"]) == len(range(0, generation.token_count, 3))
        assert "replay from the database." in response.context["text"] or not generation.is_terminal
    for connection in generation.connections.all():
        assert f"<td>{connection.pk}</td>" in html


def test_detail_page_marks_stalls_and_sequence_gaps(admin_client):
    generation = factories.generation(status="interrupted", reason="upstream_stall", stall_at_chunk=2)
    TokenChunk.objects.filter(generation=generation, first_seq=7).delete()
    response = admin_client.get(change_url(generation))
    timeline = response.context["timeline"]
    assert [row["first_seq"] for row in timeline if row["stall"]] == [10], "the pause before the chunk after the gap"
    assert [row["missing"] for row in timeline if row["missing"]] == [(7, 9)]
    html = response.content.decode()
    assert "gap: seq 7–9 missing" in html and 'class="stall"' in html


THOUGHTS = ["The", " user", " asks", " how", " to", " resume", "; ", "event", " ids", "."]


@pytest.mark.parametrize("status", ["complete", "streaming"])
def test_detail_page_shows_the_reasoning_and_its_part_in_the_timeline(admin_client, status):
    generation = factories.generation(status=status, reasoning=THOUGHTS, heartbeat_age_s=0.5)
    response = admin_client.get(change_url(generation))
    html = response.content.decode()
    reasoning, text = "".join(THOUGHTS), "Resume by event id, then replay from the database."
    assert (response.context["reasoning"], response.context["text"]) == (reasoning, text)
    heading = "Reasoning" if status == "complete" else "Reasoning so far"
    assert f'<h2>{heading}</h2>\n  <pre class="gen-text" id="gen-reasoning">{reasoning}</pre>' in html
    runs = [(run["part"], run["first_seq"], run["last_seq"], run["tokens"]) for run in response.context["timeline_runs"]]
    assert runs == [("reasoning", 1, 10, 10), ("text", 11, 21, 11)]
    assert re.findall(r'<td class="part">(\w+)</td>', html) == ["reasoning", "text"]
    assert [row["part"] for row in response.context["timeline"]] == ["reasoning"] * 4 + ["text"] * 4


def test_detail_page_of_an_answer_without_reasoning_has_no_reasoning_block(admin_client):
    response = admin_client.get(change_url(factories.generation(status="complete")))
    assert 'id="gen-reasoning"' not in response.content.decode()
    assert {run["part"] for run in response.context["timeline_runs"]} == {"text"}


def test_detail_page_of_a_continuation_links_both_ways(admin_client):
    first = factories.generation(status="interrupted", reason="upstream_stall", tokens=["Partial", " text"])
    second = factories.generation(status="complete", continued_from=first, tokens=[" and", " the", " rest."])
    response = admin_client.get(change_url(second))
    assert response.context["text"] == "Partial text and the rest."
    assert change_url(first) in response.content.decode()
    assert change_url(second) in admin_client.get(change_url(first)).content.decode()
    assert "already continued" in admin_client.get(change_url(first)).context["continue_refusal"]


def test_detail_page_of_a_pruned_generation(admin_client):
    generation = factories.generation(status="complete")
    TokenChunk.objects.filter(generation=generation).delete()
    response = admin_client.get(change_url(generation))
    assert response.context["pruned"] and "snapshot" in response.content.decode()
    assert response.context["text"] == "Resume by event id, then replay from the database."


def test_overview_counts(admin_client):
    factories.every_state()
    response = admin_client.get(OVERVIEW)
    assert response.status_code == 200
    day, week = response.context["windows"]
    assert (day["total"], week["total"]) == (9, 10)
    assert (day["running"], week["running"]) == (2, 2)
    cells = {(r["status"], r["reason"]): [count for count, _url in r["cells"]] for r in response.context["status_rows"]}
    assert cells == {
        ("cancelled", ""): [1, 1],
        ("complete", ""): [1, 1],
        ("failed", ""): [1, 1],
        ("interrupted", "operator"): [0, 1],
        ("interrupted", "server_shutdown"): [1, 1],
        ("interrupted", "upstream_error"): [1, 1],
        ("interrupted", "upstream_stall"): [1, 1],
        ("interrupted", "worker_lost"): [1, 1],
    }
    assert dict(response.context["end_rows"]) == {
        "completed": [3, 3],
        "client_gone": [2, 2],
        "server_shutdown": [1, 1],
        "(still open)": [1, 1],
    }
    assert [g["generation"].interrupt_reason for g in response.context["newest"]] == [
        "server_shutdown", "upstream_error", "upstream_stall", "worker_lost", "operator",
    ]
    assert response.context["stuck"] == 1
    html = response.content.decode()
    for item in response.context["newest"]:
        assert item["admin_url"] in html and item["chat_url"] in html


def test_overview_count_links_open_the_matching_generations(admin_client):
    states = factories.every_state()
    response = admin_client.get(OVERVIEW)
    row = next(r for r in response.context["status_rows"] if r["reason"] == "worker_lost")
    _count, url = row["cells"][0]
    listed = admin_client.get(url).context["cl"].result_list
    assert [g.pk for g in listed] == [states["worker_lost"].pk]


def test_overview_median_reconnects(admin_client):
    for resumed in (0, 1, 2, 3):
        factories.generation(connections=[{"end_reason": "client_gone"}] + [{"resumed_from": 2}] * resumed)
    day, week = admin_client.get(OVERVIEW).context["windows"]
    assert day["median_reconnects"] == week["median_reconnects"] == 1.5
    assert day["with_reconnects"] == 3 and day["max_reconnects"] == 3


def test_overview_with_no_data(admin_client):
    response = admin_client.get(OVERVIEW)
    assert response.status_code == 200
    assert "No interrupted generation." in response.content.decode()


def test_other_models_are_searchable_and_streams_read_only(admin_client):
    states = factories.every_state()
    assert admin_client.get("/admin/chat/conversation/", {"q": "alice"}).context["cl"].result_count == 10
    messages = admin_client.get("/admin/chat/message/", {"q": "replay from the database"}).context["cl"]
    assert messages.result_count == 7, "the assistant messages of the generations that ended with text"
    connection = StreamConnection.objects.first()
    chunk = TokenChunk.objects.first()
    for model, obj in (("streamconnection", connection), ("tokenchunk", chunk)):
        assert admin_client.get(f"/admin/chat/{model}/").status_code == 200
        assert admin_client.get(f"/admin/chat/{model}/add/").status_code == 403
        page = admin_client.get(f"/admin/chat/{model}/{obj.pk}/change/")
        assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
        assert admin_client.post(f"/admin/chat/{model}/{obj.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/chat/conversation/{states['complete'].conversation_id}/change/").status_code == 200


@pytest.mark.parametrize("path", [CHANGELIST, OVERVIEW, "detail", "/admin/chat/streamconnection/", "/admin/chat/tokenchunk/"])
def test_pages_are_refused_to_non_staff(client, path):
    generation = factories.generation()
    path = change_url(generation) if path == "detail" else path
    anonymous = client.get(path)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    client.force_login(factories.user("mallory"))
    logged_in = client.get(path)
    assert logged_in.status_code == 302 and "/admin/login/" in logged_in["Location"]
    assert client.post(CHANGELIST, {"action": "delete_token_chunks", "_selected_action": [str(generation.pk)]}).status_code == 302
    assert TokenChunk.objects.filter(generation=generation).exists()


def test_staff_without_generation_permissions_cannot_see_the_overview(client):
    staff = factories.user("viewer", is_staff=True)
    client.force_login(staff)
    assert client.get(OVERVIEW).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_generation"))
    client.force_login(staff)
    assert client.get(OVERVIEW).status_code == 200
    listing = client.get(CHANGELIST)
    assert listing.status_code == 200
    assert "continue_generations" not in listing.content.decode(), "viewing is not operating"


# --- Actions ----------------------------------------------------------------------


def test_mark_interrupted_ends_a_stuck_generation_keeping_its_tokens(admin_client):
    states = factories.every_state()
    stuck = states["streaming"]
    response = act(admin_client, "mark_interrupted", stuck)
    assert "marked as interrupted" in messages_of(response)[0]
    stuck.refresh_from_db()
    assert (stuck.status, stuck.interrupt_reason) == ("interrupted", "operator")
    assert stuck.last_seq == 11 and stuck.finished_at is not None
    assert stuck.assistant_message.content == "Resume by event id, then replay from the database."
    again = act(admin_client, "mark_interrupted", stuck, states["complete"])
    assert all("had already ended" in m for m in messages_of(again))
    assert Generation.objects.get(pk=states["complete"].pk).status == "complete"


def test_mark_interrupted_keeps_a_continuation_prefix(admin_client):
    first = factories.generation(status="interrupted", reason="upstream_stall", tokens=["One", " two"])
    running = factories.generation(status="streaming", continued_from=first, tokens=[" three"], heartbeat_age_s=60)
    act(admin_client, "mark_interrupted", running)
    running.refresh_from_db()
    assert running.assistant_message.content == "One two three"
    assert (running.first_seq, running.last_seq, running.token_count) == (3, 3, 1)


def test_delete_token_chunks_of_finished_generations_only(admin_client):
    states = factories.every_state()
    response = act(admin_client, "delete_token_chunks", states["complete"], states["streaming"])
    assert "Deleted 4 token chunk(s) of 1 finished generation(s)" in messages_of(response)[0]
    assert "Skipped 1 still running" in messages_of(response)[0]
    assert not TokenChunk.objects.filter(generation=states["complete"]).exists()
    assert TokenChunk.objects.filter(generation=states["streaming"]).count() == 4
    assert Message.objects.get(pk=states["complete"].assistant_message_id).content.endswith("database.")


@pytest.mark.parametrize(
    "state, refusal",
    [
        ("streaming", "is still streaming"),
        ("complete", "is complete; there is nothing to continue"),
        ("failed", "has no partial text; retry it instead"),
    ],
)
def test_continue_is_refused_with_a_reason(admin_client, state, refusal):
    generation = factories.every_state()[state]
    before = Generation.objects.count()
    response = act(admin_client, "continue_generations", generation)
    assert refusal in messages_of(response)[0]
    assert Generation.objects.count() == before


def test_continue_is_refused_for_a_generation_already_continued(admin_client):
    first = factories.generation(status="interrupted", reason="upstream_stall")
    second = factories.generation(status="interrupted", reason="upstream_stall", continued_from=first, tokens=[" more"])
    response = act(admin_client, "continue_generations", first)
    assert f"already continued by {second.pk}" in messages_of(response)[0]


def test_retry_is_refused_while_running(admin_client):
    generation = factories.every_state()["streaming"]
    response = act(admin_client, "retry_generations", generation)
    assert "still streaming; cancel it first" in messages_of(response)[0]
    assert Generation.objects.filter(user_message=generation.user_message).count() == 1


def test_retry_keeps_to_the_users_limit_on_running_answers(admin_client, settings):
    """An operator's retry went past the user's limit: it skipped the lock and the check a regenerate makes."""
    states = factories.every_state()
    settings.CHAT_MAX_ACTIVE_GENERATIONS_PER_USER = 1  # The user already has a streaming answer.
    finished = states["upstream_error"]
    response = act(admin_client, "retry_generations", finished)
    assert "the limit is 1" in messages_of(response)[0]
    assert Generation.objects.filter(user_message=finished.user_message).count() == 1


def test_detail_page_offers_the_actions_that_apply(admin_client):
    states = factories.every_state()
    running = admin_client.get(change_url(states["streaming"])).content.decode()
    assert 'value="mark_interrupted"' in running and 'value="retry_generations"' not in running
    interrupted = admin_client.get(change_url(states["upstream_error"])).content.decode()
    for action in ("retry_generations", "continue_generations", "delete_token_chunks"):
        assert f'value="{action}"' in interrupted
    assert 'value="mark_interrupted"' not in interrupted
    form = re.search(r'<form id="gen-actions" method="post" action="([^"]+)">', interrupted)
    assert form and form.group(1) == CHANGELIST
    assert str(uuid.UUID(str(states["upstream_error"].pk))) in interrupted


def test_api_tokens_are_listed_without_their_hash_and_can_be_revoked(admin_client, django_user_model):
    from chat.models import ApiToken

    user = django_user_model.objects.create_user("carol", password="x")
    token = ApiToken.objects.create(user=user, key_hash="f" * 64, prefix="tok_abc", name="phone")
    changelist = reverse("admin:chat_apitoken_changelist")
    response = admin_client.get(changelist)
    assert response.status_code == 200
    assert "tok_abc" in response.text and "carol" in response.text and "f" * 64 not in response.text
    assert "f" * 64 not in admin_client.get(reverse("admin:chat_apitoken_change", args=[token.pk])).text
    assert admin_client.get(reverse("admin:chat_apitoken_add")).status_code == 403
    admin_client.post(changelist, {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_api_token_admin_is_staff_only(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("dave", password="x"))
    response = client.get(reverse("admin:chat_apitoken_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
