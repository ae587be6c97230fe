"""The incremental JSON parser behind `json` stream events: pure, no server."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.jsonstream import MAX_DEPTH, InvalidJson, JsonSnapshots, document_error, parse_document

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
