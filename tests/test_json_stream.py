"""The incremental JSON parser behind `json` stream events: pure, no server."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.streaming.jsonstream import (
    MAX_DEPTH,
    InvalidJson,
    JsonSnapshots,
    document_error,
    parse_document,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def snapshots_by_char(text: str) -> list:
    """Every snapshot, fed one character at a time, as (offset, value); finish() counts as one more character."""
    parser, out = JsonSnapshots(), []
    for offset, char in enumerate(text, start=1):
        if parser.feed(char):
            out.append((offset, json.loads(parser.dumps())))
    if parser.finish():
        out.append((len(text) + 1, json.loads(parser.dumps())))
    return out


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(name)

    return json.loads(text, parse_constant=refuse)


def extends(earlier, later) -> bool:
    """`later` holds everything `earlier` holds (a snapshot only ever grows)."""
    if isinstance(earlier, dict):
        return isinstance(later, dict) and all(k in later and extends(v, later[k]) for k, v in earlier.items())
    if isinstance(earlier, list):
        return (
            isinstance(later, list)
            and len(later) >= len(earlier)
            and all(extends(a, b) for a, b in zip(earlier, later))
        )
    return earlier == later


@given(json_values, st.sampled_from([None, 0, 2]), st.randoms())
@settings(max_examples=300, deadline=None)
def test_snapshots_are_valid_growing_and_end_with_the_document(value, indent, rng):
    text = json.dumps(value, indent=indent, ensure_ascii=rng.random() < 0.5)
    snapshots = snapshots_by_char(text)
    assert snapshots, "a complete document gives at least one snapshot"
    assert snapshots[-1][1] == strict_loads(text)
    for (_, earlier), (_, later) in zip(snapshots, snapshots[1:]):
        assert extends(earlier, later), (earlier, later)
    # Any split into chunks gives the snapshot of the same offset after each chunk.
    by_offset = dict(snapshots)
    parser, offset, latest = JsonSnapshots(), 0, None
    while offset < len(text):
        size = rng.randint(1, 12)
        chunk = text[offset : offset + size]
        offset += len(chunk)
        grew = parser.feed(chunk)
        expected = [v for o, v in snapshots if o <= offset]
        if grew:
            latest = json.loads(parser.dumps())
            assert latest == expected[-1]
        if offset in by_offset:
            assert json.loads(parser.dumps()) == by_offset[offset]
    parser.finish()
    assert parser.complete and parser.snapshot() == strict_loads(text)


@given(json_values, st.randoms())
@settings(max_examples=300, deadline=None)
def test_validity_agrees_with_the_standard_library(value, rng):
    """Damaged documents: the parser calls them invalid exactly when a strict json.loads does."""
    text = json.dumps(value)
    position = rng.randrange(len(text) + 1)
    damage = rng.choice(["cut", "insert", "delete"])
    if damage == "cut":
        text = text[:position]
    elif damage == "insert":
        text = text[:position] + rng.choice('{}[]",:x0-. \\') + text[position:]
    else:
        text = text[:position] + text[position + 1 :]
    try:
        strict_loads(text)
        valid = True
    except ValueError:
        valid = False
    assert (document_error(text) is None) == valid, text


CARDS = '{"title": "Plan", "items": [{"name": "Step 1", "detail": "a"}, {"name": "Step 2", "detail": "b"}]}'


def test_cards_appear_whole():
    values = [v for _, v in snapshots_by_char(CARDS)]
    assert values == [
        {},
        {"title": "Plan"},
        {"title": "Plan", "items": []},
        {"title": "Plan", "items": [{"name": "Step 1", "detail": "a"}]},
        {"title": "Plan", "items": [{"name": "Step 1", "detail": "a"}, {"name": "Step 2", "detail": "b"}]},
    ]


def test_open_objects_inside_objects_show_their_complete_fields():
    values = [v for _, v in snapshots_by_char('{"form": {"name": "Jo", "email": "jo@example.org"}}')]
    assert values == [{}, {"form": {}}, {"form": {"name": "Jo"}}, {"form": {"name": "Jo", "email": "jo@example.org"}}]


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ('{"name": "Jo', {}),
        ('{"n": 12', {}),  # 12 may go on: 123
        ('{"n": 12,', {"n": 12}),
        ('{"ok": tr', {}),
        ('{"ok": true', {"ok": True}),
        ('[1, [2, 3', [1]),
        ('["a\\u00e9', []),
        ('["a\\u00e9"', ["aé"]),
    ],
)
def test_fragments_hold_only_complete_values(fragment, expected):
    parser = JsonSnapshots()
    parser.feed(fragment)
    assert parser.snapshot() == expected
    assert json.loads(parser.dumps()) == expected


def test_a_top_level_number_completes_at_the_end():
    parser = JsonSnapshots()
    assert not parser.feed("42")
    assert not parser.has_snapshot
    assert parser.finish() and parser.snapshot() == 42


def test_surrogate_pairs_split_across_feeds():
    parser = JsonSnapshots()
    for piece in ['["\\ud83d', "\\ude00", '"]']:
        parser.feed(piece)
    parser.finish()
    assert parser.snapshot() == ["\U0001f600"]


@pytest.mark.parametrize(
    "text",
    ["", "   ", "{", '{"a" 1}', "[1,]", "{,}", "NaN", "[Infinity]", "01", '"a\nb"', "{} {}", "[1] x", "tru", '{"a":1', "-"],
)
def test_invalid_documents(text):
    assert document_error(text) is not None
    with pytest.raises(InvalidJson):
        parse_document(text)


def test_an_error_stops_the_snapshots():
    parser = JsonSnapshots()
    parser.feed('[1, 2, }')
    assert parser.failed and parser.snapshot() == [1, 2]
    assert not parser.feed(", 3]")
    assert parser.snapshot() == [1, 2]


def test_nesting_is_bounded():
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert "nesting" in document_error(deep)
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert document_error(ok) is None


def test_simulated_answers_are_documents():
    from chat.llm.simulated import compose_json_answer

    for seed in range(20):
        text = compose_json_answer(f"question {seed}", random.Random(seed))
        assert parse_document(text) == json.loads(text)


# --- Over a real server: `json` events live, on replay, after resumes -------------------------

from tests.support.api import json_events  # noqa: E402
from tests.support.ws import read_ws  # noqa: E402

JSON_PROMPT = "List the steps to ship a mobile release"


def check_json_events(events, *, resumed_after: int | None = None) -> list[tuple[str, dict]]:
    """Each `json` event parses, follows the token event it belongs to, and carries that event's id.

    A resumed stream may start with the json event of the client's last
    token again (the client cannot tell whether it got it); it is dropped here.
    """
    found = json_events(events)
    for index, event in enumerate(events):
        if event.event == "json":
            assert json.loads(event.data)["seq"] == int(event.id)
            if index == 0 and resumed_after is not None:
                assert int(event.id) == resumed_after, "only the last token's json event is sent again"
                continue
            previous = events[index - 1]
            assert previous.event in ("token", "snapshot") and previous.id == event.id, "a json event follows its token"
    if found and resumed_after is not None and int(found[0][0]) == resumed_after:
        found = found[1:]
    ids = [int(i) for i, _ in found]
    assert ids == sorted(set(ids)), "one json event per triggering token, in order"
    return found


async def test_json_events_live_and_on_replay(alice_api):
    answer = await alice_api.ask(JSON_PROMPT, response_format="json")
    live = await alice_api.read_stream(answer["generation"]["id"])
    stored = await alice_api.generation(answer["generation"]["id"])
    assert live.terminal.event == "done" and json.loads(live.terminal.data)["finish_reason"] == "stop"
    assert stored["text"] == live.text
    document = json.loads(stored["text"])
    assert stored["json"] == document, "GET returns the parsed answer beside the text"
    live_json = check_json_events(live.events)
    assert live_json[-1][1]["value"] == document, "the last json event is the whole answer"
    assert len(live_json) > 3 and live_json[0][1]["value"] == {}
    for (_, earlier), (_, later) in zip(live_json, live_json[1:]):
        assert extends(earlier["value"], later["value"])
    # A replay (tokens in stored chunks) gives the very same json events.
    replay = await alice_api.read_stream(answer["generation"]["id"])
    assert check_json_events(replay.events) == live_json
    assert replay.text == stored["text"]


async def test_resume_from_every_event_id_gives_the_same_json_events(alice_api):
    answer = await alice_api.ask(JSON_PROMPT + " (resume)", response_format="json")
    generation_id = answer["generation"]["id"]
    live = await alice_api.read_stream(generation_id)
    everything = check_json_events(live.events)
    by_id = dict(everything)
    for event_id in sorted({int(e.id) for e in live.events if e.id}):
        rest = await alice_api.read_stream(generation_id, last_event_id=str(event_id))
        assert check_json_events(rest.events, resumed_after=event_id) == [
            (i, v) for i, v in everything if int(i) > event_id
        ], event_id
        resent = json_events(rest.events)[:1]
        if str(event_id) in by_id:
            assert resent == [(str(event_id), by_id[str(event_id)])], "the last token's json event comes again, first"
        assert live.text.endswith(rest.text)


async def test_json_events_survive_cuts_while_live(alice_api):
    """Cut the live stream every few events and resume: the json events add up to those of one read."""
    answer = await alice_api.ask(JSON_PROMPT + " (cuts)", response_format="json")
    generation_id = answer["generation"]["id"]
    json_seen, text, last_id = [], "", None
    for _ in range(1000):
        # Cuts fall anywhere, also between a token event and its json event.
        read = await alice_api.read_stream(generation_id, last_event_id=last_id, max_events=3)
        check_json_events(read.events, resumed_after=int(last_id) if last_id else None)
        json_seen += json_events(read.events)
        text += read.text
        last_id = read.last_id or last_id
        if read.terminal:
            break
    whole = await alice_api.read_stream(generation_id)
    deduplicated = [event for index, event in enumerate(json_seen) if event not in json_seen[:index]]
    assert deduplicated == check_json_events(whole.events), "every json event arrives, the final one included"
    assert text == whole.text


async def test_a_cut_between_a_token_and_its_json_event_loses_nothing(alice_api):
    answer = await alice_api.ask(JSON_PROMPT + " (cut in between)", response_format="json")
    generation_id = answer["generation"]["id"]
    await alice_api.read_stream(generation_id)
    whole = await alice_api.read_stream(generation_id)  # A replay: the same events every time.
    expected = check_json_events(whole.events)
    for index, event in enumerate(whole.events):
        if event.event == "json":
            # Read up to the token event before it, and drop the connection there.
            first = await alice_api.read_stream(generation_id, max_events=index)
            assert first.events[-1].event == "token" and first.events[-1].id == event.id
            rest = await alice_api.read_stream(generation_id, last_event_id=first.last_id)
            assert json_events(first.events) + json_events(rest.events) == expected


async def test_coalescing_does_not_change_the_json_events(alice_api):
    answer = await alice_api.ask(JSON_PROMPT + " (coalesced)", response_format="json")
    coalesced = await alice_api.read_stream(answer["generation"]["id"], params={"coalesce_ms": "300"})
    plain = await alice_api.read_stream(answer["generation"]["id"])
    assert check_json_events(coalesced.events) == check_json_events(plain.events)


async def test_json_events_over_the_websocket(alice_api, server):
    answer = await alice_api.ask(JSON_PROMPT + " (ws)", response_format="json")
    generation_id = answer["generation"]["id"]
    sse = check_json_events((await alice_api.read_stream(generation_id)).events)
    read = await read_ws(server, generation_id, None, subprotocols=["llm-stream.v1", f"bearer.{alice_api.token}"])
    assert read.close_code == 1000
    ws = [(str(f["id"]), {"seq": f["seq"], "value": f["value"]}) for f in read.frames if f["type"] == "json"]
    assert ws == sse


async def test_non_streaming_fallback_returns_the_parsed_value(alice_api):
    conversation = await alice_api.new_conversation()
    response = await alice_api.post_message(conversation["id"], JSON_PROMPT, stream=False, response_format="json")
    assert response.status_code == 200, response.text
    generation = response.json()["generation"]
    assert generation["status"] == "complete" and generation["json"] == json.loads(generation["text"])
    assert isinstance(generation["json"]["items"], list)


@pytest.fixture
async def truncating_api(start_server):
    """A model that stops after 25 tokens: its JSON document is cut short."""
    from tests.support.api import api_client

    server = start_server("sqlite", CHAT_SIMULATED_MAX_TOKENS="25")
    async with api_client(server.url, "alice") as client:
        yield client


async def test_an_answer_that_is_not_json_ends_as_invalid_json(truncating_api):
    answer = await truncating_api.ask(JSON_PROMPT, response_format="json")
    read = await truncating_api.read_stream(answer["generation"]["id"])
    done = json.loads(read.terminal.data)
    assert read.terminal.event == "done" and done["finish_reason"] == "invalid_json"
    assert "not valid JSON" in done["error"] and "token limit" in done["error"]
    stored = await truncating_api.generation(answer["generation"]["id"])
    assert stored["status"] == "complete" and stored["finish_reason"] == "invalid_json"
    assert stored["text"] == read.text != "" and stored["json"] is None, "the raw text is kept"
    with pytest.raises(ValueError):
        json.loads(stored["text"])
    for _, event in check_json_events(read.events):
        assert isinstance(event["value"], dict), "what was complete still came through"
    conversation = await truncating_api.new_conversation()
    blocking = await truncating_api.post_message(conversation["id"], JSON_PROMPT, stream=False, response_format="json")
    assert blocking.json()["generation"]["finish_reason"] == "invalid_json"
    assert blocking.json()["generation"]["json"] is None
