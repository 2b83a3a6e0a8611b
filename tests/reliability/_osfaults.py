"""OS-call fault injection for the files llmos writes outside SQLite (RELIABILITY.md A3, D2).

The FAISS index, the graph JSON, router weights and LM checkpoints are written with Python
file I/O, ``os.fsync``, ``os.replace`` / ``os.rename`` and, for checkpoints, safetensors'
native ``serialize_file``. :class:`OsFaults` wraps exactly those calls (installed with pytest's
``monkeypatch`` for one test) and makes the N-th one that touches a path under ``root`` fail
the way the kernel does: ``OSError(EIO)`` or ``OSError(ENOSPC)``, once or from N on. A failed
write first writes half of its data (a short write), so a half-written temp file is left for
the code under test to clean up. Calls on paths outside ``root`` pass through untouched, and
nothing is counted or failed while disarmed.

Faultable calls ("ops"): ``open`` (a file opened for writing, ``os.open`` with a write flag,
``os.mkdir``), ``write`` (a write on such a file, one ``serialize_file``), ``fsync`` and
``rename`` (``os.replace`` / ``os.rename``). Removal (``unlink``, ``rmtree``) never fails: it
is the clean-up path, and the kernel frees space rather than needing it there.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

OPS = frozenset({"open", "write", "fsync", "rename"})
_ERRORS = {"eio": errno.EIO, "enospc": errno.ENOSPC}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass
class OsFaults:
    """Controller: ``arm(n, mode, kind)``, run the operation, ``disarm()``, read what happened."""

    root: str = ""
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    fired: int = 0
    fired_at: list[tuple[int, str, str]] = field(default_factory=list)  # (call no., op, path)
    _n: int = 0
    _mode: str = "once"
    _kind: str = "eio"
    _armed: bool = False
    _seen: int = 0
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def set_root(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(root).rstrip("/")

    def arm(self, n: int, mode: str = "once", kind: str = "eio") -> None:
        if n < 1 or mode not in ("once", "persistent") or kind not in _ERRORS:
            raise ValueError(f"bad fault: n={n} mode={mode!r} kind={kind!r}")
        with self._guard:
            self.calls = dict.fromkeys(OPS, 0)
            self.fired, self.fired_at, self._seen = 0, [], 0
            self._n, self._mode, self._kind, self._armed = n, mode, kind, True

    def disarm(self) -> None:
        with self._guard:
            self._armed = False

    @property
    def armed(self) -> bool:
        return self._armed

    def under(self, path: Any) -> bool:
        if not self._armed or not self.root:
            return False
        try:
            p = os.path.realpath(os.fspath(path))
        except TypeError:  # an fd or something that is not a path
            return False
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        return p == self.root or p.startswith(self.root + "/")

    def check(self, op: str, path: Any) -> None:
        """Count one ``op`` on ``path``; raise the injected OSError if this is the one."""
        if not self.under(path):
            return
        with self._guard:
            self.calls[op] += 1
            self._seen += 1
            hit = self._seen == self._n if self._mode == "once" else self._seen >= self._n
            if not hit:
                return
            self.fired += 1
            self.fired_at.append((self._seen, op, os.fsdecode(os.fspath(path))))
        code = _ERRORS[self._kind]
        raise OSError(code, os.strerror(code), os.fsdecode(os.fspath(path)))

    def total(self) -> int:
        return sum(self.calls.values())


class _FaultyFile:
    """A file opened for writing under the root: each ``write`` is one faultable call."""

    def __init__(self, f: Any, path: str, faults: OsFaults) -> None:
        self._f, self._path, self._faults = f, path, faults

    def write(self, data: Any) -> int:
        try:
            self._faults.check("write", self._path)
        except OSError:
            half = len(data) // 2
            if half:  # a short write, then the error: the temp file is half-written
                self._f.write(data[:half])
                self._f.flush()
            raise
        return self._f.write(data)

    def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            self.write(line)

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __iter__(self) -> Any:
        return iter(self._f)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def install(monkeypatch: pytest.MonkeyPatch, root: Path) -> OsFaults:
    """Wrap the OS calls for the rest of the test; only paths under ``root`` are faulted."""
    import safetensors.torch

    faults = OsFaults()
    faults.set_root(root)
    real_open, real_os_open, real_fdopen = io.open, os.open, os.fdopen
    real_fsync, real_replace, real_rename, real_mkdir = os.fsync, os.replace, os.rename, os.mkdir
    real_serialize = safetensors.torch.serialize_file

    def writing(mode: str) -> bool:
        return any(c in mode for c in "wax+")

    def f_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, int) or not writing(mode) or not faults.under(file):
            return real_open(file, mode, *args, **kwargs)
        faults.check("open", file)
        return _FaultyFile(real_open(file, mode, *args, **kwargs), os.fspath(file), faults)

    def f_os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & _WRITE_FLAGS and dir_fd is None:
            faults.check("open", path)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    def f_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, mode, *args, **kwargs)
        path = _fd_path(fd) if writing(mode) else None
        return _FaultyFile(f, path, faults) if path and faults.under(path) else f

    def f_fsync(fd: Any) -> None:
        num = fd if isinstance(fd, int) else fd.fileno()
        path = _fd_path(num)
        if path is not None:
            faults.check("fsync", path)
        real_fsync(fd)

    def f_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        faults.check("rename", dst)
        real_replace(src, dst, **kwargs)

    def f_rename(src: Any, dst: Any, **kwargs: Any) -> None:
        faults.check("rename", dst)
        real_rename(src, dst, **kwargs)

    def f_mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        faults.check("open", path)
        real_mkdir(path, mode, **kwargs)

    def f_serialize(tensors: Any, filename: Any, metadata: Any = None) -> None:
        try:
            faults.check("write", filename)
        except OSError:
            real_serialize(tensors, filename, metadata=metadata)
            size = os.path.getsize(filename)
            os.truncate(filename, size // 2)  # the native writer died halfway
            raise
        real_serialize(tensors, filename, metadata=metadata)

    monkeypatch.setattr(io, "open", f_open)
    monkeypatch.setattr(builtins, "open", f_open)
    monkeypatch.setattr(os, "open", f_os_open)
    monkeypatch.setattr(os, "fdopen", f_fdopen)
    monkeypatch.setattr(os, "fsync", f_fsync)
    monkeypatch.setattr(os, "replace", f_replace)
    monkeypatch.setattr(os, "rename", f_rename)
    monkeypatch.setattr(os, "mkdir", f_mkdir)
    monkeypatch.setattr(safetensors.torch, "serialize_file", f_serialize)
    return faults
