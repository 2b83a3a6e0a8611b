"""The ingestion loop behind :meth:`knowledge.base.KnowledgeBase.ingest`.

One file at a time: read (confined to the roots), hash, skip if unchanged, parse, chunk,
embed, commit to SQLite in one transaction, update the in-memory index, BM25 and graph.
The index and graph files are checkpointed every ``CHECKPOINT_SECONDS`` and at the end;
a crash in between leaves SQLite ahead of them, which the next open detects and repairs.
Errors are per file: reported on one line, the rest of the batch still lands.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from knowledge.documents import discover
from knowledge.errors import IngestError, KnowledgeError

if TYPE_CHECKING:
    from knowledge.base import IngestReport, KnowledgeBase, ProgressFn

CHECKPOINT_SECONDS = 60.0


def _under(path: str, roots: Sequence[Path]) -> bool:
    for r in roots:
        root = os.path.realpath(os.path.expanduser(str(r)))
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def run_ingest(
    kb: KnowledgeBase,
    paths: list[str | Path],
    roots: Sequence[Path] | None,
    sync: bool,
    show_progress: bool,
    on_progress: ProgressFn | None,
) -> IngestReport:
    from knowledge.base import IngestReport

    t0 = time.perf_counter()
    report = IngestReport()
    root_list = [Path(r) for r in (roots if roots is not None else paths)]
    files, errors = discover(paths, root_list)
    report.errors.extend(errors)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="file", desc="ingest", dynamic_ncols=True)
    last_save = time.monotonic()
    dirty = False
    failed: set[str] = set()
    try:
        for n, path in enumerate(files, start=1):
            status = "error"
            try:
                data = kb._read(path, root_list)
                sha = hashlib.sha256(data).hexdigest()
                old = kb.store.get_document(str(path))
                if old is not None and old["sha256"] == sha:
                    report.unchanged.append(str(path))
                    status = "unchanged"
                else:
                    doc = kb._parse(path, data)
                    report.chunks += kb._store_document(path, data, doc)
                    (report.updated if old else report.added).append(str(path))
                    status = "updated" if old else "added"
                    dirty = True
            except IngestError as exc:
                report.errors.append((str(path), str(exc)))
                failed.add(str(path))
            except KnowledgeError as exc:  # embedding or store failure: stop, keep what landed
                report.errors.append((str(path), str(exc)))
                failed.add(str(path))
                break
            if dirty and time.monotonic() - last_save > CHECKPOINT_SECONDS:
                kb._checkpoint()
                last_save, dirty = time.monotonic(), False
            if bar is not None:
                bar.update(1)
                bar.set_postfix(chunks=report.chunks, refresh=False)
            if on_progress is not None:
                on_progress(n, len(files), {"path": str(path), "status": status,
                                            "chunks": report.chunks})  # fmt: skip
        if sync:
            keep = {str(p) for p in files} | failed
            for key in kb.store.paths():
                if key not in keep and _under(key, root_list) and kb._remove_key(key):
                    report.removed.append(key)
                    dirty = True
        if dirty or kb.store.pending_graph():
            try:
                kb._checkpoint()
            except KnowledgeError as exc:  # SQLite holds the documents; the next ingest catches up
                report.errors.append(("(index and graph)", str(exc)))
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.perf_counter() - t0
    return report
