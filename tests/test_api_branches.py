"""Branches, models and search in the API: edits and regenerated answers as versions, the model picker, `?q=`."""

import json

import pytest

from tests.support.api import api_client, error_of
from tests.support.openai_upstream import OpenAIUpstream

pytestmark = pytest.mark.timeout(60)

MODELS = [
    {"provider": "simulated", "model": "simulated-1", "label": "Simulated"},
    {"id": "sim-fast", "provider": "simulated", "model": "simulated-fast", "label": "Simulated (fast)"},
]
FAST = {"CHAT_SIMULATED_TOKENS_PER_S": 0, "CHAT_SIMULATED_FIRST_TOKEN_DELAY_S": 0}


@pytest.fixture
def models_server(start_server):
    return start_server("sqlite", CHAT_MODELS=json.dumps(MODELS), **FAST)


@pytest.fixture
async def api(models_server):
    async with api_client(models_server.url, "alice") as client:
        yield client


async def answered(api, response) -> dict:
    """The finished generation of a posted message (or regenerate)."""
    assert response.status_code == 201, response.text
    return await api.wait_terminal(response.json()["generation"]["id"])


async def messages(api, conversation_id: int) -> list[dict]:
    return (await api.request("GET", f"/api/conversations/{conversation_id}/messages")).json()["items"]


async def test_models_are_listed_and_an_unknown_one_is_a_400(api):
    listed = (await api.request("GET", "/api/models")).json()
    assert listed == {
        "items": [
            {"id": "simulated-1", "label": "Simulated", "provider": "simulated", "model": "simulated-1"},
            {"id": "sim-fast", "label": "Simulated (fast)", "provider": "simulated", "model": "simulated-fast"},
        ]
    }
    conversation = await api.new_conversation()
    error = error_of(await api.post_message(conversation["id"], "hi", model="gpt-9"), 400)
    assert error["code"] == "unknown_model" and error["field"] == "model"
    assert "simulated-1, sim-fast" in error["message"]
    assert await messages(api, conversation["id"]) == []  # nothing was created
    for bad in (5, "", "x" * 101):
        error_of(await api.post_message(conversation["id"], "hi", model=bad), 400)


async def test_the_chosen_model_answers_and_the_conversation_remembers_it(api):
    conversation = await api.new_conversation()
    cid = conversation["id"]
    assert conversation["model"] == ""
    first = await answered(api, await api.post_message(cid, "Explain retries", model="sim-fast"))
    assert (first["provider"], first["model"]) == ("simulated", "simulated-fast")
    assert (await api.request("GET", f"/api/conversations/{cid}")).json()["model"] == "sim-fast"
    # No model: the conversation's last one.
    second = await answered(api, await api.post_message(cid, "And timeouts?"))
    assert second["model"] == "simulated-fast"
    # Another model answers the same prompt differently.
    other = await api.new_conversation()
    default = await answered(api, await api.post_message(other["id"], "Explain retries"))
    assert default["model"] == "simulated-1"
    assert default["text"] != first["text"]
    items = await messages(api, cid)
    assert [m["generation"]["model"] for m in items if m["role"] == "assistant"] == ["simulated-fast"] * 2


async def test_regenerate_is_a_new_version_with_another_text(api):
    conversation = await api.new_conversation()
    first = await answered(api, await api.post_message(conversation["id"], "How do I resume a stream?"))
    regenerated = await api.request("POST", f"/api/generations/{first['id']}/regenerate", json={})
    second = await answered(api, regenerated)
    third = await answered(api, await api.request("POST", f"/api/generations/{second['id']}/regenerate", json={}))
    assert len({first["text"], second["text"], third["text"]}) == 3, "each version differs"
    items = await messages(api, conversation["id"])
    user = items[0]
    assert user["role"] == "user" and user["parent_id"] is None
    answers = [m for m in items if m["role"] == "assistant"]
    assert [m["parent_id"] for m in answers] == [user["id"]] * 3  # versions: one parent
    assert [m["content"] for m in answers] == [first["text"], second["text"], third["text"]]
    error = error_of(await api.request("POST", f"/api/generations/{first['id']}/regenerate", json={"model": "nope"}), 400)
    assert (error["code"], error["field"]) == ("unknown_model", "model")
    with_model = await api.request("POST", f"/api/generations/{first['id']}/regenerate", json={"model": "sim-fast"})
    assert (await answered(api, with_model))["model"] == "simulated-fast"


async def test_an_edit_is_a_branch_and_each_branch_keeps_its_own_history(start_server, backend):
    """On both databases: the history is one hand-written recursive query."""
    with OpenAIUpstream(scenario="ok") as upstream:
        server = start_server(backend, CHAT_LLM_PROVIDER="openai", CHAT_OPENAI_BASE_URL=upstream.base_url)
        async with api_client(server.url, "alice") as api:
            cid = (await api.new_conversation())["id"]
            one = await answered(api, await api.post_message(cid, "one"))
            two = await answered(api, await api.post_message(cid, "two"))
            # Edit "two": the new text follows the same answer as "two" did.
            two_message = (await api.generation(two["id"]))["user_message_id"]
            items = await messages(api, cid)
            parent = next(m for m in items if m["id"] == two_message)["parent_id"]
            assert parent == one["assistant_message_id"]
            edited = await api.post_message(cid, "two, edited", parent_id=parent)
            assert edited.json()["message"]["parent_id"] == parent
            edit = await answered(api, edited)
            # Going on from the first branch's answer after the edit.
            three = await answered(api, await api.post_message(cid, "three", parent_id=two["assistant_message_id"]))
            # Edit the first message: a new first message.
            root = await api.post_message(cid, "one, edited", parent_id=None)
            assert root.json()["message"]["parent_id"] is None
            await answered(api, root)

            def history(index):
                return [(m["role"], m["content"]) for m in upstream.requests[index].body["messages"]]

            assert history(2) == [("user", "one"), ("assistant", one["text"]), ("user", "two, edited")]
            assert history(3) == [
                ("user", "one"), ("assistant", one["text"]), ("user", "two"), ("assistant", two["text"]), ("user", "three"),
            ]
            assert history(4) == [("user", "one, edited")]
            assert edit["text"] and three["text"]
            # Omitted parent_id: after the newest message (the edited first message's answer).
            newest = await api.post_message(cid, "four")
            assert newest.json()["message"]["parent_id"] == (await messages(api, cid))[-3]["id"]
            await answered(api, newest)


async def test_a_parent_from_elsewhere_is_a_404_that_says_nothing_about_it(api, models_server):
    mine = await api.new_conversation()
    other = await api.new_conversation()
    elsewhere = await answered(api, await api.post_message(other["id"], "elsewhere"))
    async with api_client(models_server.url, "bob") as bob:
        bobs = await answered(bob, await bob.post_message((await bob.new_conversation())["id"], "bob's"))
    first = await answered(api, await api.post_message(mine["id"], "first"))
    # Another conversation's message, another user's, or none: the same 404.
    for parent_id in (elsewhere["assistant_message_id"], bobs["assistant_message_id"], 10**12):
        error = error_of(await api.post_message(mine["id"], "x", parent_id=parent_id), 404)
        assert (error["code"], error["field"]) == ("not_found", "parent_id")
        assert error["message"] == f"Message {parent_id} is not in this conversation."
    error = error_of(await api.post_message(mine["id"], "x", parent_id=first["user_message_id"]), 400)
    assert (error["code"], error["field"]) == ("invalid_parent", "parent_id") and "is a user message" in error["message"]
    for bad in (0, -1, 2**63, "7", 1.5, True):
        assert error_of(await api.post_message(mine["id"], "x", parent_id=bad), 400)["field"] == "parent_id"
    # Bob cannot post into Alice's conversation at all.
    async with api_client(models_server.url, "bob") as bob:
        error_of(await bob.post_message(mine["id"], "x", parent_id=first["assistant_message_id"]), 404)
    assert len(await messages(api, mine["id"])) == 2


async def test_search_finds_a_conversation_by_a_word_of_an_answer_and_only_the_owners(api, models_server):
    answer = await answered(api, await api.post_message((await api.new_conversation("Trip"))["id"], "Tell me about caching"))
    cid = answer["conversation_id"]
    word = next(w for w in answer["text"].split() if len(w) > 6 and w.isalpha())
    titled = await api.new_conversation("Quarterly zebra report")

    async def found(client, q, **params):
        response = await client.request("GET", "/api/conversations", params={"q": q, **params})
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert cid in await found(api, word.upper())  # case-insensitive
    assert await found(api, "ZEBRA") == [titled["id"]]
    assert await found(api, "no such words anywhere 42") == []
    async with api_client(models_server.url, "bob") as bob:
        await answered(bob, await bob.post_message((await bob.new_conversation("zebra too"))["id"], "zebra"))
        assert titled["id"] not in await found(bob, "zebra") and len(await found(bob, "zebra")) >= 1
        assert cid not in await found(bob, word)
    # Paginated like the whole list.
    for n in range(3):
        await api.new_conversation(f"paged zebra {n}")
    first_page = (await api.request("GET", "/api/conversations", params={"q": "zebra", "limit": 2})).json()
    assert len(first_page["items"]) == 2 and first_page["next_cursor"]
    rest = await found(api, "zebra", cursor=first_page["next_cursor"], limit=10)
    assert len(rest) == 2 and not set(rest) & {c["id"] for c in first_page["items"]}
    for bad in ("", "x" * 201, "a\x00b"):
        assert error_of(await api.request("GET", "/api/conversations", params={"q": bad}), 400)["field"] == "q"
