"""``/session export``: a conversation as a Markdown file, written atomically.

Pure functions over the transcript (``Turn``-like objects), so tests need no app.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any


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
    data = transcript_markdown(title, session_id, turns).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=exports_dir, prefix=".export-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
