"""Concurrent messages to one session over real HTTP (RELIABILITY B1, B4): each stored once,
numbered 1..N without gaps, in the order the server accepted them."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from tests.service.conftest import hold

pytestmark = pytest.mark.anyio

FAQ = [
    "How do I track my order?",
    "How long does it take before my order ships?",
    "Can I change or cancel my order?",
    "how long does delivery take?",
]


async def _start(client: httpx.AsyncClient, key: str) -> str:
    r = await client.post("/v1/chat", json={"message": FAQ[0]}, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.json()["session_id"]


async def test_fifty_concurrent_messages_to_one_session(live_server, service_bot):
    base, _admin, widget, _agent = live_server
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        sid = await _start(client, widget)
        messages = [f"{rng.choice(FAQ)} (msg {i}, seed {seed})" for i in range(50)]

        async def send(i: int) -> httpx.Response:
            body = {"message": messages[i], "session_id": sid, "idempotency_key": f"b1-{i}"}
            return await client.post("/v1/chat", json=body, headers={"X-API-Key": widget})

        responses = await asyncio.gather(*(send(i) for i in range(50)))
    assert [r.status_code for r in responses] == [200] * 50, f"seed {seed}"
    stored = service_bot.store.turns(sid)
    assert [t.n for t in stored] == list(range(1, 52)), f"seed {seed}"
    by_n = {t.n: t for t in stored}
    for i, r in enumerate(responses):
        body = r.json()
        # each reply belongs to its own message, and that message is stored once
        assert by_n[body["turn"]].user_text == messages[i]
        assert "database is locked" not in body["reply"]["text"]
    assert sorted(t.user_text for t in stored[1:]) == sorted(messages)


async def test_turns_finish_in_arrival_order_despite_decreasing_hold_times(
    live_server, service_bot
):
    """Rasa's test_message_order: earlier messages hold longer, yet are stored first."""
    base, _admin, widget, _agent = live_server
    holds = [400, 340, 280, 220, 160, 100, 40]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        sid = await _start(client, widget)

        async def send(i: int, ms: int) -> httpx.Response:
            await asyncio.sleep(i * 0.03)  # a known arrival order
            body = {"message": hold(ms, f"order {i}"), "session_id": sid}
            return await client.post("/v1/chat", json=body, headers={"X-API-Key": widget})

        responses = await asyncio.gather(*(send(i, ms) for i, ms in enumerate(holds)))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["turn"] for r in responses] == list(range(2, 2 + len(holds)))
    stored = service_bot.store.turns(sid)[1:]
    assert [t.skill for t in stored] == ["hold"] * len(holds)
    assert [t.user_text for t in stored] == [hold(ms, f"order {i}") for i, ms in enumerate(holds)]


async def test_sessions_do_not_see_each_other(live_server, service_bot):
    base, _admin, widget, _agent = live_server
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def conversation(k: int) -> tuple[str, str]:
            nonce = f"nonce{k:03d}x{random.randrange(10**6)}"
            sid = await _start(client, widget)
            for j in range(3):
                body = {"message": f"{FAQ[j]} {nonce}", "session_id": sid}
                r = await client.post("/v1/chat", json=body, headers={"X-API-Key": widget})
                assert r.status_code == 200
            return sid, nonce

        results = await asyncio.gather(*(conversation(k) for k in range(12)))
    nonces = {n for _, n in results}
    for sid, nonce in results:
        text = " ".join(t.user_text + " " + t.reply_text for t in service_bot.store.turns(sid))
        assert nonce in text
        assert not any(other in text for other in nonces - {nonce})


async def test_deleting_a_conversation_mid_turn_answers_503_and_keeps_it(live_server, service_bot):
    """DELETE while a turn holds the session's lock: 503 "retry" after the store's wait, the
    conversation intact and the turn stored; once the turn is done, the delete goes through."""
    base, _admin, widget, _agent = live_server
    store, h = service_bot.store, {"X-API-Key": widget}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        sid = await _start(client, widget)
        body = {"message": hold(1500, "mid-turn delete"), "session_id": sid}
        turn = asyncio.create_task(client.post("/v1/chat", json=body, headers=h))
        for _ in range(500):
            if store.lock(sid).locked():
                break
            await asyncio.sleep(0.01)
        assert store.lock(sid).locked(), "the turn never started"
        wait, store.delete_timeout_s = store.delete_timeout_s, 0.05
        try:
            r = await client.delete(f"/v1/sessions/{sid}", headers=h)
        finally:
            store.delete_timeout_s = wait
        assert r.status_code == 503, r.text
        assert r.json()["error"] == (
            f"session {sid} is busy (a turn is in flight; waited 0.05 s); retry"
        )
        assert (await turn).status_code == 200
        assert [t.skill for t in store.turns(sid)][-1] == "hold"  # the turn was not lost
        r = await client.delete(f"/v1/sessions/{sid}", headers=h)
        assert r.status_code == 204 and not store.exists(sid)
