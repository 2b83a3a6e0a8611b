"""Uploaded documents: safe file names, the upload folder, and a bounded multipart parser.

The multipart parser is small and strict, over a body that
:class:`assistant.http_asgi.BodyLimitMiddleware` has already capped (python-multipart is not a
dependency).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from assistant.errors import InputError
from assistant.http_models import FileError

#: The file types an upload may have, as the API's error messages list them.
UPLOAD_SUFFIXES_NOTE = "txt, md, html, pdf, csv, jsonl, json, tsv"
_NAME_OK = re.compile(r"[^A-Za-z0-9._() +-]")


def safe_upload_name(name: str) -> str:
    """A plain file name for an upload, or InputError: no paths, no hidden or odd names."""
    from knowledge.documents import SUPPORTED

    if not isinstance(name, str) or not name.strip():
        raise InputError("a file name is required")
    raw = name.strip()
    if "/" in raw or "\\" in raw or "\x00" in raw or raw in {".", ".."} or ":" in raw:
        raise InputError(f"{raw[:80]!r}: file names may not contain a path")
    if raw.startswith(".") or ".." in raw:
        raise InputError(f"{raw[:80]!r}: hidden files and '..' are not accepted")
    if any(ord(c) < 32 for c in raw):
        raise InputError(f"{raw[:80]!r}: control characters in the file name")
    clean = _NAME_OK.sub("_", raw)
    if len(clean) > 120:
        raise InputError(f"{raw[:80]!r}…: file name too long (120 characters at most)")
    suffix = Path(clean).suffix.lower()
    if suffix not in SUPPORTED:
        raise InputError(f"{clean}: unsupported file type (use {UPLOAD_SUFFIXES_NOTE})")
    return clean


def upload_dir(project: Any) -> Path:
    """Where uploads land: ``knowledge/uploads`` of a project (ingested again at start-up);
    the demo's content ships inside the package, so its uploads go to its state dir."""
    base = project.state / "uploads" if project.is_demo else project.knowledge_dir / "uploads"
    return Path(base)


def save_uploads(
    project: Any, files: list[tuple[str, bytes]]
) -> tuple[list[Path], list[FileError]]:
    from knowledge.atomic import atomic_write

    root = upload_dir(project)
    root.mkdir(parents=True, exist_ok=True)
    if root.is_symlink() or root.parent.is_symlink():
        raise InputError("the upload folder is a symlink; refusing to write there")
    real = root.resolve()
    saved: list[Path] = []
    errors: list[FileError] = []
    for name, data in files:
        try:
            clean = safe_upload_name(name)
            target = root / clean
            if target.is_symlink() or target.resolve().parent != real:
                raise InputError(f"{clean}: would be written outside the upload folder")
            atomic_write(target, data)
            saved.append(target)
        except InputError as exc:
            errors.append(FileError(file=str(name)[:200], error=str(exc)))
    return saved, errors


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The file parts of a ``multipart/form-data`` body: ``[(filename, bytes)]``.

    A small strict parser over an already size-capped body (python-multipart is not a
    dependency); non-file fields are ignored, malformed bodies raise InputError.
    """
    from email.message import EmailMessage

    boundary = _boundary(content_type)
    delim = b"--" + boundary.encode("latin-1")
    chunks = body.split(delim)
    if len(chunks) < 3:
        raise InputError("malformed multipart body (no parts or no closing boundary)")
    out: list[tuple[str, bytes]] = []
    closed = False
    for raw in chunks[1:]:
        if raw.startswith(b"--"):
            closed = True
            break
        if not raw.startswith(b"\r\n") or not raw.endswith(b"\r\n"):
            raise InputError("malformed multipart body (bad part framing)")
        head, sep, content = raw[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise InputError("malformed multipart body (part without headers)")
        lines = head.split(b"\r\n")
        if len(lines) > 16:
            raise InputError("malformed multipart body (too many part headers)")
        disposition = ""
        for line in lines:
            hname, colon, value = line.partition(b":")
            if not colon:
                raise InputError("malformed multipart body (bad part header)")
            if hname.strip().lower() == b"content-disposition":
                disposition = value.decode("utf-8", "replace").strip()
        if not disposition:
            continue
        msg = EmailMessage()
        try:
            msg["Content-Disposition"] = disposition
            filename = msg.get_filename()
        except Exception:
            raise InputError("malformed multipart body (bad Content-Disposition)") from None
        if filename is None:
            continue  # a plain form field
        out.append((str(filename), content))
    if not closed:
        raise InputError("malformed multipart body (no closing boundary)")
    return out


def _boundary(content_type: str) -> str:
    m = re.search(r'boundary=(?:"([^"]{1,70})"|([^\s;,"]{1,70}))', content_type, re.I)
    if m is None:
        raise InputError("multipart body without a boundary")
    value = m.group(1) or m.group(2)
    if not re.fullmatch(r"[0-9A-Za-z'()+_,\-./:=? ]{1,70}", value) or value.endswith(" "):
        raise InputError("multipart boundary has invalid characters")
    return value
