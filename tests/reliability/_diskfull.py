"""Disk-full scenarios (RELIABILITY.md A3), run inside a small tmpfs in a private mount namespace.

``python tests/reliability/_diskfull.py SCENARIO DIR`` where DIR is the mount point; the
test starts it under ``unshare -m`` (see ``conftest.run_on_small_fs``). Each scenario fills
the disk with ballast files, makes the real component write, frees the ballast and writes
again *in the same process*, then prints one JSON line of observations for the test to assert.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


class Ballast:
    """Files that fill the filesystem, and can be freed to let writes through again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)
        self.files: list[Path] = []

    def fill(self, leave: int = 0, block: int = 16 * 1024) -> None:
        """Fill the disk, then free about ``leave`` bytes."""
        chunk = b"\0" * block
        while True:
            p = self.folder / f"b{len(self.files)}"
            try:
                with open(p, "wb") as f:
                    f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                p.unlink(missing_ok=True)
                break
            self.files.append(p)
        while leave > 0 and self.files:
            self.files.pop().unlink()
            leave -= block

    def free(self) -> None:
        for p in self.files:
            p.unlink(missing_ok=True)
        self.files.clear()


def one_line(exc: BaseException) -> dict[str, Any]:
    text = str(exc)
    return {"type": type(exc).__name__, "message": text, "one_line": "\n" not in text}


# -- sessions --------------------------------------------------------------------------------
def sessions(root: Path) -> dict[str, Any]:
    from assistant.errors import LlmosError
    from assistant.sessions import SessionStore

    ballast = Ballast(root / "ballast")
    store = SessionStore(root / "s.db")
    store.create("s1")
    ballast.fill(leave=160 * 1024)
    acked: list[tuple[int, str]] = []
    error: dict[str, Any] | None = None
    for i in range(10_000):
        text = f"turn {i} " + "x" * 2000
        try:
            t = store.append("s1", text, "ok", idempotency_key=f"k{i}")
        except LlmosError as exc:
            error = one_line(exc)
            break
        acked.append((t.n, text))
    rows = [(t.n, t.user_text) for t in store.turns("s1")]
    integrity_full = store.integrity_check()
    ballast.free()
    after: dict[str, Any] = {}
    try:
        t = store.append("s1", "after freeing space", "ok", idempotency_key="after")
        after = {"ok": True, "n": t.n}
    except Exception as exc:
        after = {"ok": False, **one_line(exc)}
    return {
        "acked": len(acked),
        "error": error,
        "stored_equals_acked": rows == acked,
        "integrity_when_full": integrity_full,
        "after": after,
        "integrity_after": store.integrity_check(),
        "turns_after": len(store.turns("s1")),
    }


# -- knowledge index -------------------------------------------------------------------------
def index(root: Path) -> dict[str, Any]:
    from knowledge.base import KnowledgeBase
    from knowledge.errors import KnowledgeError
    from tests.reliability._crash import make_file
    from tests.reliability._ingest_driver import HashEmbedder

    class WideEmbedder(HashEmbedder):
        dim = 384  # vectors as wide as MiniLM's, so the index file is the big write

    import random

    rng = random.Random(7)
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"a{i}.txt").write_bytes(make_file(rng, corpus / f"a{i}.txt", 0) * 4)
    store = root / "kb"
    kb = KnowledgeBase.open(store, WideEmbedder(), index_kind="flat")
    kb.ingest([corpus])
    before = kb.stats()
    index_sha = hashlib.sha256(kb.index_path.read_bytes()).hexdigest()
    index_size = kb.index_path.stat().st_size
    ballast = Ballast(root / "ballast")
    ballast.fill(leave=index_size // 3)
    (corpus / "new.txt").write_bytes(b"A new note about refunds. " * 40)
    error: dict[str, Any] | None = None
    report_errors: list[Any] = []
    try:
        rep = kb.ingest([corpus])
        report_errors = rep.errors
    except KnowledgeError as exc:
        error = one_line(exc)
    except Exception as exc:
        error = {**one_line(exc), "unexpected": traceback.format_exc(limit=3)}
    for where, msg in report_errors:  # ingest reports a failed index save instead of raising
        if error is None and where == "(index and graph)":
            error = {"type": "StoreError", "message": msg, "one_line": "\n" not in msg}
    meta = kb.store.get_meta("index") or {}
    old_intact = (
        hashlib.sha256(kb.index_path.read_bytes()).hexdigest() == meta.get("sha256")
    ) and meta.get("sha256") == index_sha
    temps = sorted(f.name for f in store.iterdir() if ".tmp" in f.name)
    integrity_full = kb.store._db.execute("PRAGMA integrity_check").fetchone()[0]
    ballast.free()
    after: dict[str, Any]
    try:
        rep = kb.ingest([corpus])
        after = {"ok": not rep.errors, "errors": rep.errors}
    except Exception as exc:
        after = {"ok": False, **one_line(exc)}
    stats_after = kb.stats()
    # a disk with no room at all: now SQLite's own commit fails
    (corpus / "new2.txt").write_bytes(b"Another note about parcels and couriers. " * 400)
    ballast.fill()
    sqlite_full: dict[str, Any] = {}
    try:
        rep = kb.ingest([corpus])
        sqlite_full = {"raised": False, "errors": rep.errors}
    except KnowledgeError as exc:
        sqlite_full = {"raised": True, **one_line(exc)}
    except Exception:
        sqlite_full = {"raised": True, "unexpected": traceback.format_exc(limit=4)}
    sqlite_full["integrity"] = kb.store._db.execute("PRAGMA integrity_check").fetchone()[0]
    ballast.free()
    rep = kb.ingest([corpus])
    sqlite_full["after_ok"] = not rep.errors
    stats_after = kb.stats()
    kb.close()
    kb2 = KnowledgeBase.open(store, WideEmbedder(), index_kind="flat")
    reopened = {"stats": kb2.stats(), "rebuilt": kb2.rebuilt}
    kb2.close()
    # the VectorIndex writer on its own: no temp file left, a clear error
    from knowledge.index import VectorIndex

    big = VectorIndex(384, "flat")
    import numpy as np

    big.add(np.arange(3000, dtype=np.int64), np.ones((3000, 384), np.float32))
    ballast.fill()
    direct: dict[str, Any] = {}
    try:
        big.write_temp(root / "big.faiss")
        direct = {"raised": False}
    except Exception as exc:
        direct = {"raised": True, **one_line(exc)}
    direct["temp_left"] = (root / "big.faiss.tmp").exists()
    ballast.free()
    return {
        "before": before,
        "error": error,
        "report_errors": report_errors,
        "old_index_intact": old_intact,
        "temps_when_full": temps,
        "integrity_when_full": integrity_full,
        "after": after,
        "stats_after": stats_after,
        "sqlite_full": sqlite_full,
        "reopened": reopened,
        "direct": direct,
    }


# -- LM checkpoint ---------------------------------------------------------------------------
def checkpoint(root: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from lm.checkpoint import read_manifest, sha256_file, validate_dir, write_checkpoint_dir

    def filler(n: int):
        def fill(tmp: Path) -> None:
            (tmp / "config.json").write_text(json.dumps({"model_type": "gpt2", "n": n}))
            save_file({"w": torch.ones(n, 64)}, str(tmp / "model.safetensors"))

        return fill

    target = root / "ckpt" / "last"
    write_checkpoint_dir(target, filler(256), {"kind": "test", "step": 1})
    ballast = Ballast(root / "ballast")
    ballast.fill(leave=32 * 1024)
    error: dict[str, Any] | None = None
    try:
        write_checkpoint_dir(target, filler(4096), {"kind": "test", "step": 2})
    except Exception as exc:
        error = one_line(exc)

    def intact(step: int) -> bool:
        try:
            manifest = validate_dir(target)
        except Exception:
            return False
        files = manifest.get("files", {})
        return manifest.get("step") == step and all(
            sha256_file(target / name) == meta["sha256"] for name, meta in files.items()
        )

    old_intact = intact(1)
    leftovers = sorted(p.name for p in target.parent.iterdir() if p.name != "last")
    ballast.free()
    after: dict[str, Any]
    try:
        write_checkpoint_dir(target, filler(4096), {"kind": "test", "step": 2})
        after = {"ok": intact(2), "step": read_manifest(target).get("step")}
    except Exception as exc:
        after = {"ok": False, **one_line(exc)}
    return {"error": error, "old_intact": old_intact, "leftovers": leftovers, "after": after}


SCENARIOS = {"sessions": sessions, "index": index, "checkpoint": checkpoint}


def main(argv: list[str]) -> int:
    root = Path(argv[2])
    st = os.statvfs(root)
    if st.f_blocks * st.f_frsize > 64 * 1024 * 1024:
        print(json.dumps({"refused": f"{root} is not a small filesystem"}))
        return 3
    try:
        result = SCENARIOS[argv[1]](root)
    except Exception as exc:
        result = {"crashed": traceback.format_exc(), **one_line(exc)}
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
