"""Transcript exports (``/session export`` in the chat): a conversation as a Markdown file,
written atomically, and their removal when the session is deleted or swept.

An export holds the conversation's text, so deleting a session must take its exports too
(RELIABILITY H3): each file names its session on its third line (``Session `ID` ``), which
:func:`prune_exports` reads back. Pure functions over ``Turn``-like objects, so tests need no app.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knowledge.atomic import atomic_write


def source_label(d: dict[str, Any]) -> str:
    """One readable line for a stored source dict (mirrors ``Source.label``)."""
    path = d.get("path") or []
    if path:
        return " ".join(str(p) for p in path)
    where = str(d.get("title") or d.get("ref") or "source")
    if d.get("page") is not None:
        where += f", page {d['page']}"
    span = d.get("span")
    if span:
        where += f", chars {span[0]}-{span[1]}"
    return where


def transcript_markdown(title: str, session_id: str, turns: list[Any]) -> str:
    lines = [f"# {title or 'Conversation'}", "", f"Session `{session_id}`", ""]
    for t in turns:
        if t.user_text:
            who = "Agent" if t.kind == "agent" else "You"
            lines += [f"**{who}:** {t.user_text}", ""]
        lines += [
            f"**Assistant** ({t.skill or t.kind} · {t.confidence:.2f}):",
            "",
            t.reply_text,
            "",
        ]
        if t.sources:
            lines += ["Sources:", ""]
            lines += [f"- {source_label(s)}" for s in t.sources]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40]
    return s or "session"


def export_session(
    exports_dir: Path, title: str, session_id: str, turns: list[Any], now: float | None = None
) -> Path:
    """Write the transcript to ``exports_dir/<date>-<title>-<id>.md``; returns the path."""
    exports_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    out = exports_dir / f"{stamp}-{_slug(title)}-{_slug(session_id)}.md"
    atomic_write(out, transcript_markdown(title, session_id, turns).encode("utf-8"))
    return out


_SESSION_LINE = re.compile(r"^Session `([^`]*)`$")


def exported_session(path: Path) -> str | None:
    """The session id an export names in its header, or None for a file that is not one."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            head = [f.readline().rstrip("\n") for _ in range(3)]
    except OSError:
        return None
    m = _SESSION_LINE.match(head[2]) if head[0].startswith("# ") else None
    return m.group(1) if m else None


STALE_TMP_S = 3600.0  # an export's temp file older than this was left by an interrupted write


def prune_exports(exports_dir: Path, keep: Callable[[str], bool], now: float | None = None) -> int:
    """Delete the exports whose session ``keep`` rejects (deleted or swept sessions) and the
    temp files interrupted exports left; returns how many files went."""
    if not exports_dir.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for path in sorted(exports_dir.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        if path.name.startswith(".") and path.suffix == ".tmp":  # atomic_write's temp files
            doomed = now - path.stat().st_mtime > STALE_TMP_S
        elif path.suffix == ".md":
            sid = exported_session(path)
            doomed = sid is not None and not keep(sid)
        else:
            doomed = False
        if doomed:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
