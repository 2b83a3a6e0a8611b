"""Crash-test driver: the real ``assistant.sessions.SessionStore`` behind a line protocol.

Run as ``python -S tests/reliability/_session_driver.py DB``. It prints ``{"ready": true}``
once the store is open, then reads one JSON command per stdin line::

    {"op": "turn", "session": "s1", "key": "k17", "text": "hello"}

and answers ``{"key": "k17", "n": 5}`` only after the turn is committed (or
``{"key": ..., "error": "..."}``), flushing every line. The harness treats a printed line as
the acknowledgement a real client would get, kills this process with SIGKILL at random
moments and resends what was not acknowledged with the same key.

Only ``assistant.errors`` and ``assistant.sessions`` are imported (the package ``__init__``
pulls in the whole assistant, ~1.5 s per restart on a busy machine): the code under test is
the same module the server uses.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _import_sessions() -> types.ModuleType:
    if "assistant" not in sys.modules:
        pkg = types.ModuleType("assistant")
        pkg.__path__ = [str(REPO / "assistant")]
        sys.modules["assistant"] = pkg
    sys.path.insert(0, str(REPO))
    import assistant.sessions as sessions

    return sessions


def main(argv: list[str]) -> int:
    sessions = _import_sessions()
    from assistant.errors import LlmosError

    store = sessions.SessionStore(argv[1])
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    known: set[str] = set()
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("op") != "turn":
            out.write(json.dumps({"error": f"unknown op {cmd.get('op')!r}"}) + "\n")
            out.flush()
            continue
        sid, key, text = cmd["session"], cmd["key"], cmd["text"]
        try:
            if sid not in known:
                store.get_or_create(sid)
                known.add(sid)
            turn = store.append(sid, text, "re: " + text, skill="echo", idempotency_key=key)
            msg = {"key": key, "n": turn.n}
        except LlmosError as exc:
            msg = {"key": key, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(msg) + "\n")
        out.flush()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
