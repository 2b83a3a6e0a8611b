"""The HTTP API in-process: chat, streaming, transcripts, idempotency, desk, documents, stats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.service.conftest import hold, parse_sse


def test_healthz_needs_no_key(api):
    r = api.client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["bot"] == "Juniper Home Assistant"


def test_chat_starts_a_session_and_answers_from_the_faq(api):
    r = api.chat("How do I track my order?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["turn"] == 1 and body["timed_out"] is False and body["handoff"] is None
    assert body["reply"]["skill"] == "qa"
    assert "tracking number" in body["reply"]["text"]
    src = body["reply"]["sources"][0]
    assert src["kind"] == "faq"
    # clients get project-relative refs, never the server's file system layout
    assert not src["ref"].startswith("/") and src["ref"].endswith("faq.csv")
    r2 = api.chat("how long does delivery take?", body["session_id"])
    assert r2.status_code == 200
    assert r2.json()["turn"] == 2 and r2.json()["session_id"] == body["session_id"]


def test_transcript_returns_turns_after_n(api):
    sid = api.chat("How do I track my order?").json()["session_id"]
    api.chat("Can I change or cancel my order?", sid)
    api.chat("how long does delivery take?", sid)
    r = api.client.get(f"/v1/sessions/{sid}", headers=api.h(api.widget))
    assert r.status_code == 200
    turns = r.json()["turns"]
    assert [t["n"] for t in turns] == [1, 2, 3]
    assert turns[1]["user"] == "Can I change or cancel my order?"
    r = api.client.get(f"/v1/sessions/{sid}?after=2", headers=api.h(api.widget))
    assert [t["n"] for t in r.json()["turns"]] == [3]
    assert r.json()["handoff"] is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"message": ""}, 422),
        ({"message": "   "}, 422),
        ({"message": "hi\x00there"}, 422),
        ({"message": "x" * 20_001}, 422),
        ({"message": "hi", "session_id": "../../etc/passwd"}, 422),
        ({"message": "hi", "session_id": "nope-never-made"}, 404),
        ({"message": "hi", "idempotency_key": "has spaces in it"}, 422),
        ({"session_id": None}, 422),
    ],
)
def test_bad_chat_input_is_a_4xx_with_a_message(api, body, status):
    r = api.client.post("/v1/chat", json=body, headers=api.h(api.widget))
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_lone_surrogate_and_invalid_utf8_are_422(api):
    raw = b'{"message": "caf\\ud800 please"}'
    r = api.client.post(
        "/v1/chat", content=raw, headers=api.h(api.widget, **{"Content-Type": "application/json"})
    )
    assert r.status_code == 422 and r.json()["error"]
    r = api.client.post(
        "/v1/chat",
        content=b'{"message": "\xff\xfe"}',
        headers=api.h(api.widget, **{"Content-Type": "application/json"}),
    )
    assert r.status_code in (400, 422) and r.json()["error"]


def test_stream_sends_start_chunks_and_done_matching_the_stored_turn(api):
    r = api.client.post(
        "/v1/chat/stream",
        json={"message": "how long does delivery take?"},
        headers=api.h(api.widget),
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "done" and "chunk" in names
    sid = events[0][1]["session_id"]
    done = events[-1][1]
    assert done["session_id"] == sid and done["turn"] == 1 and done["timed_out"] is False
    streamed = "".join(d["text"] for e, d in events if e == "chunk")
    assert streamed == done["reply"]["text"]
    stored = api.client.get(f"/v1/sessions/{sid}", headers=api.h(api.widget)).json()["turns"]
    assert len(stored) == 1 and stored[0]["reply"] == done["reply"]["text"]


def test_stream_of_a_slow_skill_streams_and_finishes(api):
    r = api.client.post(
        "/v1/chat/stream", json={"message": hold(50, "s1")}, headers=api.h(api.widget)
    )
    events = parse_sse(r.text)
    assert events[-1][0] == "done"
    assert events[-1][1]["reply"]["skill"] == "hold"


def test_stream_validation_errors_come_before_the_stream(api):
    r = api.client.post("/v1/chat/stream", json={"message": " "}, headers=api.h(api.widget))
    assert r.status_code == 422


def test_idempotent_retry_returns_the_stored_reply_once(api, service_bot):
    first = api.chat("How do I track my order?", idempotency_key="order-q-1").json()
    sid = first["session_id"]
    again = api.chat("How do I track my order?", sid, idempotency_key="order-q-1").json()
    assert again["turn"] == first["turn"] == 1
    assert again["reply"]["text"] == first["reply"]["text"]
    assert again["replayed"] is True
    assert len(service_bot.store.turns(sid)) == 1


def test_idempotent_retry_of_a_first_message_finds_the_same_session(api, service_bot):
    a = api.chat("Can I change or cancel my order?", idempotency_key="first-msg-77").json()
    b = api.chat("Can I change or cancel my order?", idempotency_key="first-msg-77").json()
    assert a["session_id"] == b["session_id"]
    assert b["replayed"] is True
    assert len(service_bot.store.turns(a["session_id"])) == 1


def test_a_widget_key_sees_only_its_own_sessions(api, service_bot):
    sid = api.chat("How do I track my order?").json()["session_id"]
    other = api.keys.create("widget", origins=[api.origin])[1]
    r = api.client.get(f"/v1/sessions/{sid}", headers=api.h(other))
    assert r.status_code == 404
    r = api.chat("and delivery?", sid, key=other)
    assert r.status_code == 404
    # a session made outside the API (CLI, TUI) is not a widget's either
    cli_sid = service_bot.new_session()
    assert api.client.get(f"/v1/sessions/{cli_sid}", headers=api.h(api.widget)).status_code == 404
    # agents see every conversation
    r = api.client.get(f"/v1/sessions/{sid}", headers=api.h(api.agent))
    assert r.status_code == 200 and len(r.json()["turns"]) == 1


def test_a_user_deletes_their_conversation(api, service_bot):
    first = api.chat("How do I track my order?", idempotency_key="start-42").json()
    sid = first["session_id"]
    assert api.chat("I want to talk to a person", sid).json()["handoff"] is not None
    url = f"/v1/sessions/{sid}"
    other = api.keys.create("widget", origins=[api.origin])[1]
    assert api.client.delete(url, headers=api.h(other)).status_code == 404  # not its session
    assert service_bot.store.exists(sid)

    r = api.client.delete(url, headers=api.h(api.widget))
    assert r.status_code == 204 and r.content == b""
    assert not service_bot.store.exists(sid)
    assert api.client.get(url, headers=api.h(api.widget)).status_code == 404
    assert api.client.delete(url, headers=api.h(api.widget)).status_code == 404
    tickets = api.client.get("/v1/tickets", headers=api.h(api.agent)).json()
    assert sid not in {t["session_id"] for t in tickets}  # its handoff ticket went with it
    bad = api.client.delete("/v1/sessions/no%20such", headers=api.h(api.widget))
    assert bad.status_code == 422 and set(bad.json()) == {"error", "detail"}
    put = api.client.put(url, headers=api.h(api.widget))  # two routes share the path
    assert put.status_code == 405 and put.headers["allow"] == "DELETE, GET"

    # a retried first message with the deleted conversation's key starts a new one
    again = api.chat("How do I track my order?", idempotency_key="start-42").json()
    assert again["session_id"] != sid and again["replayed"] is False and again["turn"] == 1


def test_desk_flow_from_handoff_to_close(api):
    w, a = api.h(api.widget), api.h(api.agent)
    sid = api.chat("How do I track my order?").json()["session_id"]
    r = api.chat("I want to talk to a person", sid)
    assert r.status_code == 200
    handoff = r.json()["handoff"]
    assert handoff is not None and handoff["status"] == "open"
    tid = handoff["ticket"]
    open_ids = [t["id"] for t in api.client.get("/v1/tickets?status=open", headers=a).json()]
    assert tid in open_ids
    detail = api.client.get(f"/v1/tickets/{tid}", headers=a).json()
    assert detail["ticket"]["session_id"] == sid
    assert [t["user"] for t in detail["turns"]][:2] == [
        "How do I track my order?",
        "I want to talk to a person",
    ]
    seen = len(api.client.get(f"/v1/sessions/{sid}", headers=w).json()["turns"])

    # replying before claiming is refused: 409
    r = api.client.post(f"/v1/tickets/{tid}/reply", json={"agent": "Dana", "text": "hi"}, headers=a)
    assert r.status_code == 409
    r = api.client.post(f"/v1/tickets/{tid}/claim", json={"agent": "Dana"}, headers=a)
    assert r.status_code == 200 and r.json()["status"] == "claimed" and r.json()["agent"] == "Dana"
    # someone else cannot take it over
    r = api.client.post(f"/v1/tickets/{tid}/claim", json={"agent": "Eli"}, headers=a)
    assert r.status_code == 409

    r = api.client.post(
        f"/v1/tickets/{tid}/reply",
        json={"agent": "Dana", "text": "Hi, I'm Dana. Your parcel is with the courier."},
        headers=a,
    )
    assert r.status_code == 200
    agent_turn = r.json()["turn"]
    assert agent_turn["kind"] == "agent"

    # the widget's poll delivers the claim notice and the agent's message
    polled = api.client.get(f"/v1/sessions/{sid}?after={seen}", headers=w).json()
    kinds = [t["kind"] for t in polled["turns"]]
    texts = [t["reply"] for t in polled["turns"]]
    assert "agent" in kinds
    assert "Hi, I'm Dana. Your parcel is with the courier." in texts
    assert polled["handoff"]["status"] == "claimed"

    # while claimed, the customer's message goes to the agent, not the bot
    r = api.chat("thanks, where is it now?", sid)
    assert r.status_code == 200 and r.json()["reply"]["skill"] != "qa"

    r = api.client.post(f"/v1/tickets/{tid}/close", json={"agent": "Dana"}, headers=a)
    assert r.status_code == 200 and r.json()["status"] == "closed"
    after = api.client.get(f"/v1/sessions/{sid}", headers=w).json()
    assert after["handoff"] is None
    assert tid in [t["id"] for t in api.client.get("/v1/tickets?status=closed", headers=a).json()]
    # and the bot answers again
    assert api.chat("how long does delivery take?", sid).json()["reply"]["skill"] == "qa"


def test_desk_errors(api):
    a = api.h(api.agent)
    assert api.client.get("/v1/tickets/999999", headers=a).status_code == 404
    r = api.client.post("/v1/tickets/999999/claim", json={"agent": "Dana"}, headers=a)
    assert r.status_code == 404
    assert api.client.get("/v1/tickets?status=lost", headers=a).status_code == 422
    r = api.client.post("/v1/tickets/1/claim", json={"agent": ""}, headers=a)
    assert r.status_code == 422


def test_upload_json_document_then_ask_about_it(api):
    text = (
        "# The office parrot\n\nThe Fernhill office parrot is called Captain Biscuit. "
        "Captain Biscuit greets every visitor at reception and likes sunflower seeds."
    )
    r = api.client.post(
        "/v1/documents", json={"name": "office-parrot.md", "text": text}, headers=api.h(api.admin)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["saved"] == ["office-parrot.md"] and body["chunks"] >= 1 and body["errors"] == []
    ans = api.chat("What is the office parrot called?").json()["reply"]
    assert "Captain Biscuit" in ans["text"]
    assert any(s["ref"].endswith("office-parrot.md") for s in ans["sources"])


def test_upload_multipart_files_with_bad_names_rejected(api, service_bot):
    from assistant.uploads import upload_dir

    files = [
        ("files", ("store-hours.txt", b"The Fernhill outlet opens at 9 am on weekdays.")),
        ("files", ("../../escape.txt", b"nope")),
        ("files", ("/etc/passwd.txt", b"nope")),
        ("files", (".hidden.md", b"nope")),
        ("files", ("program.exe", b"MZ")),
    ]
    r = api.client.post("/v1/documents", files=files, headers=api.h(api.admin))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["saved"] == ["store-hours.txt"]
    assert len(body["errors"]) == 4
    up = upload_dir(service_bot.project)
    assert sorted(p.name for p in up.iterdir() if p.name.endswith(".txt")) == ["store-hours.txt"]
    assert not (up.parent / "escape.txt").exists()


def test_upload_refuses_to_follow_a_planted_symlink(api, service_bot, tmp_path):
    from assistant.uploads import upload_dir

    up = upload_dir(service_bot.project)
    up.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("original")
    link = up / "planted.txt"
    os.symlink(outside, link)
    try:
        r = api.client.post(
            "/v1/documents",
            files=[("files", ("planted.txt", b"overwritten?"))],
            headers=api.h(api.admin),
        )
        assert r.status_code == 400
        assert outside.read_text() == "original"
    finally:
        link.unlink()


def test_upload_with_nothing_valid_is_400(api):
    a = api.h(api.admin)
    r = api.client.post("/v1/documents", files=[("files", ("x.exe", b"MZ"))], headers=a)
    assert r.status_code == 400 and r.json()["error"]
    r = api.client.post("/v1/documents", json={"name": "a.md"}, headers=a)
    assert r.status_code == 400
    r = api.client.post("/v1/documents", content=b"plain", headers=a)
    assert r.status_code == 400
    r = api.client.post(
        "/v1/documents",
        content=b"--XYZ\r\nContent-Disposition: form-data; name=files\r\n\r\nx",
        headers={**a, "Content-Type": "multipart/form-data; boundary=XYZ"},
    )
    assert r.status_code == 400 and "multipart" in r.json()["error"]
    # a PDF that is not one: stored nowhere, reported
    r = api.client.post("/v1/documents", files=[("files", ("fake.pdf", b"not a pdf"))], headers=a)
    assert r.status_code == 400
    assert not (Path(api.service.assistant.project.state) / "uploads" / "fake.pdf").exists()


def test_stats_count_turns_skills_and_handoffs(api):
    before = api.client.get("/v1/stats", headers=api.h(api.admin)).json()
    sid = api.chat("How do I track my order?").json()["session_id"]
    api.chat("I want to talk to a person", sid)
    r = api.client.get("/v1/stats?bucket=day", headers=api.h(api.admin))
    assert r.status_code == 200
    after = r.json()
    assert after["turns"] >= before["turns"] + 2
    assert after["handoffs"] >= before["handoffs"] + 1
    assert after["intents"].get("qa", 0) >= 1
    assert 0.0 <= after["unanswered_rate"] <= 1.0
    assert after["bucket_s"] == 86400 and after["series"]
    assert api.client.get("/v1/stats?since=-1", headers=api.h(api.admin)).status_code == 422
    assert api.client.get("/v1/stats?bucket=week", headers=api.h(api.admin)).status_code == 422
    future = api.client.get("/v1/stats?since=99999999999", headers=api.h(api.admin)).json()
    assert future["turns"] == 0


def test_demo_page_and_widget_script(api):
    page = api.client.get("/")
    assert page.status_code == 200
    assert "{{WIDGET_KEY}}" not in page.text and "{{TITLE}}" not in page.text
    assert api.service.demo_key in page.text
    # the demo key is a real widget key for the server's own origin
    assert api.keys.verify(api.service.demo_key).role == "widget"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "sha256-" in csp
    js = api.client.get("/widget.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.headers["x-content-type-options"] == "nosniff"
