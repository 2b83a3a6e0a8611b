"""A fault-injecting SQLite VFS in pure ctypes (RELIABILITY.md A4).

SQLite's own way of testing I/O errors is a VFS shim that fails the N-th write, sync or
truncate. apsw cannot install one for the stdlib ``sqlite3`` module (it bundles another
SQLite), but here ``_sqlite3`` links ``libsqlite3.so.0`` dynamically, so
``ctypes.CDLL("libsqlite3.so.0")`` is the very library the application uses and a VFS
registered through it as the default is used by every connection opened afterwards.

The shim copies the default VFS (same ``szOsFile``, same methods) and replaces only
``xOpen``: a file opened under the chosen directory gets its ``pMethods`` pointed at a copy
of its original ``sqlite3_io_methods`` whose ``xWrite`` / ``xSync`` / ``xTruncate`` count
their calls and, once armed, return ``SQLITE_IOERR_*`` (or ``SQLITE_FULL``) at the N-th one.
Files elsewhere (pytest's own SQLite users) keep their methods untouched.

Every ctypes object SQLite may call or read lives in module globals for the whole process:
SQLite keeps raw pointers to them. Callbacks never let an exception escape (ctypes would
print it and return garbage); they answer ``SQLITE_IOERR`` instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SQLITE_OK = 0
SQLITE_IOERR = 10
SQLITE_FULL = 13
SQLITE_IOERR_WRITE = SQLITE_IOERR | (3 << 8)
SQLITE_IOERR_FSYNC = SQLITE_IOERR | (4 << 8)
SQLITE_IOERR_TRUNCATE = SQLITE_IOERR | (6 << 8)
_IOERR_CODES = {"write": SQLITE_IOERR_WRITE, "sync": SQLITE_IOERR_FSYNC,
                "truncate": SQLITE_IOERR_TRUNCATE}  # fmt: skip
OPS = frozenset(_IOERR_CODES)
VFS_NAME = b"llmos-fault"

_i64 = ctypes.c_int64
_vp = ctypes.c_void_p
XOPEN = ctypes.CFUNCTYPE(ctypes.c_int, _vp, _vp, _vp, ctypes.c_int, ctypes.POINTER(ctypes.c_int))
XWRITE = ctypes.CFUNCTYPE(ctypes.c_int, _vp, _vp, ctypes.c_int, _i64)
XTRUNCATE = ctypes.CFUNCTYPE(ctypes.c_int, _vp, _i64)
XSYNC = ctypes.CFUNCTYPE(ctypes.c_int, _vp, ctypes.c_int)


class Vfs(ctypes.Structure):
    """``struct sqlite3_vfs`` (iVersion 3); methods other than xOpen are opaque pointers."""

    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("szOsFile", ctypes.c_int),
        ("mxPathname", ctypes.c_int),
        ("pNext", _vp),
        ("zName", ctypes.c_char_p),
        ("pAppData", _vp),
        ("xOpen", _vp),
        *[
            (name, _vp)
            for name in (
                "xDelete", "xAccess", "xFullPathname", "xDlOpen", "xDlError", "xDlSym",
                "xDlClose", "xRandomness", "xSleep", "xCurrentTime", "xGetLastError",
                "xCurrentTimeInt64", "xSetSystemCall", "xGetSystemCall", "xNextSystemCall",
            )
        ],
    ]  # fmt: skip


class IoMethods(ctypes.Structure):
    """``struct sqlite3_io_methods`` (iVersion 3: with the xShm* and xFetch/xUnfetch members)."""

    _fields_ = [
        ("iVersion", ctypes.c_int),
        *[
            (name, _vp)
            for name in (
                "xClose", "xRead", "xWrite", "xTruncate", "xSync", "xFileSize", "xLock",
                "xUnlock", "xCheckReservedLock", "xFileControl", "xSectorSize",
                "xDeviceCharacteristics", "xShmMap", "xShmLock", "xShmBarrier", "xShmUnmap",
                "xFetch", "xUnfetch",
            )
        ],
    ]  # fmt: skip


class FaultVfsUnavailable(RuntimeError):
    """The stdlib ``sqlite3`` cannot be reached through ctypes (e.g. a static ``_sqlite3``)."""


@dataclass
class FaultVFS:
    """The installed shim: arm it, run the operation, read what it did, disarm it.

    ``calls`` counts every faultable call seen under ``root`` since the last :meth:`arm`
    (per op name); ``fired`` counts the errors injected, ``fired_at`` their call numbers.
    Only files whose path is under ``root`` are wrapped, and only those opened after
    :meth:`set_root`.
    """

    root: str | None = None
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    fired: int = 0
    fired_at: list[int] = field(default_factory=list)  # the armed-op call numbers that failed
    _n: int = 0
    _mode: str = "once"
    _kind: str = "ioerr"
    _ops: frozenset[str] = OPS
    _armed: bool = False
    _seen: int = 0  # calls of the armed ops since arm()
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def set_root(self, root: str | os.PathLike[str] | None) -> None:
        """Fault only files opened under ``root`` from now on (None: no file is wrapped)."""
        self.root = None if root is None else os.path.realpath(root).rstrip("/") + "/"

    def arm(
        self,
        n: int,
        mode: str = "once",
        kind: str = "ioerr",
        ops: Iterable[str] = OPS,
    ) -> None:
        """Fail the ``n``-th call (counting from 1) of ``ops``; "persistent": that and all later.

        ``kind`` "ioerr" answers SQLITE_IOERR_WRITE/FSYNC/TRUNCATE, "full" SQLITE_FULL.
        """
        chosen = frozenset(ops)
        if n < 1 or mode not in ("once", "persistent") or kind not in ("ioerr", "full"):
            raise ValueError(f"bad fault: n={n} mode={mode!r} kind={kind!r}")
        if not chosen or chosen - OPS:
            raise ValueError(f"ops must be a non-empty subset of {sorted(OPS)}")
        with self._guard:
            self.calls = dict.fromkeys(OPS, 0)
            self.fired = 0
            self.fired_at = []
            self._n, self._mode, self._kind, self._ops = n, mode, kind, chosen
            self._seen = 0
            self._armed = True

    def disarm(self) -> None:
        """Let every call through again (the counters keep their values for inspection)."""
        with self._guard:
            self._armed = False

    def _decide(self, op: str) -> int:
        """SQLITE_OK to let the call through, else the error code to return."""
        with self._guard:
            self.calls[op] += 1
            if not self._armed or op not in self._ops:
                return SQLITE_OK
            self._seen += 1
            hit = self._seen == self._n if self._mode == "once" else self._seen >= self._n
            if not hit:
                return SQLITE_OK
            self.fired += 1
            self.fired_at.append(self._seen)
            return SQLITE_FULL if self._kind == "full" else _IOERR_CODES[op]

    def wraps(self, path: str | None) -> bool:
        root = self.root
        return root is not None and path is not None and os.path.realpath(path).startswith(root)

    # -- default VFS switching ------------------------------------------------------------
    def make_default(self) -> None:
        """New connections use the shim (files outside ``root`` behave exactly as before)."""
        _INSTALLED.lib.sqlite3_vfs_register(ctypes.byref(_INSTALLED.vfs), 1)

    def restore_default(self) -> None:
        """New connections use the original default VFS again (open ones keep theirs)."""
        _INSTALLED.lib.sqlite3_vfs_register(_INSTALLED.orig_ptr, 1)


_KEEP: list[object] = []  # every ctypes object SQLite holds a pointer to, for the process lifetime


def _keep(*objs: object) -> None:
    """Hold ``objs`` until the process ends, past interpreter shutdown too: a connection that
    the garbage collector closes during shutdown still calls the callbacks (module globals
    such as ``_KEEP`` are cleared before that, so each object also gets a leaked reference)."""
    for obj in objs:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
        _KEEP.append(obj)


class _Installed:
    """What :func:`install` set up, once per process."""

    fault: FaultVFS | None = None
    broken = ""  # why a first install failed: later calls fail the same way
    lib: ctypes.CDLL
    vfs: Vfs
    orig_ptr: int
    copies: dict[int, int] = {}  # original io-methods address -> wrapped copy's address


_INSTALLED = _Installed()
_INSTALL_LOCK = threading.Lock()


def _library() -> ctypes.CDLL:
    """The SQLite library the stdlib module is linked against (already loaded: same instance)."""
    import _sqlite3  # noqa: F401  (load it first so dlopen finds the same handle)

    name = ctypes.util.find_library("sqlite3") or "libsqlite3.so.0"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise FaultVfsUnavailable(f"cannot load {name}: {exc}") from None


def _wrapped_methods(orig_addr: int, fault: FaultVFS) -> int:
    """Address of the wrapped copy of the io-methods at ``orig_addr`` (one copy per original)."""
    copies = _INSTALLED.copies
    if orig_addr in copies:
        return copies[orig_addr]
    orig = IoMethods.from_address(orig_addr)
    copy = IoMethods()
    ctypes.memmove(ctypes.byref(copy), orig_addr, ctypes.sizeof(IoMethods))
    if orig.iVersion < 3:  # members past the struct's version are not there: do not copy junk
        for name in ("xFetch", "xUnfetch") + (
            ("xShmMap", "xShmLock", "xShmBarrier", "xShmUnmap") if orig.iVersion < 2 else ()
        ):
            setattr(copy, name, None)
    real_write = XWRITE(orig.xWrite)
    real_sync = XSYNC(orig.xSync)
    real_truncate = XTRUNCATE(orig.xTruncate)

    def x_write(f: int, buf: int, amount: int, offset: int) -> int:
        try:
            rc = fault._decide("write")
            return rc if rc else int(real_write(f, buf, amount, offset))
        except BaseException:
            return SQLITE_IOERR_WRITE

    def x_sync(f: int, flags: int) -> int:
        try:
            rc = fault._decide("sync")
            return rc if rc else int(real_sync(f, flags))
        except BaseException:
            return SQLITE_IOERR_FSYNC

    def x_truncate(f: int, size: int) -> int:
        try:
            rc = fault._decide("truncate")
            return rc if rc else int(real_truncate(f, size))
        except BaseException:
            return SQLITE_IOERR_TRUNCATE

    cbs = (XWRITE(x_write), XSYNC(x_sync), XTRUNCATE(x_truncate))
    copy.xWrite, copy.xSync, copy.xTruncate = (ctypes.cast(c, _vp).value for c in cbs)
    _keep(copy, real_write, real_sync, real_truncate, *cbs)
    addr = ctypes.addressof(copy)
    copies[orig_addr] = addr
    return addr


def install() -> FaultVFS:
    """Register the shim once per process as the default VFS and return its controller.

    Raises :class:`FaultVfsUnavailable` where the stdlib ``sqlite3`` uses a SQLite that
    ctypes cannot reach (checked by opening a stdlib connection with ``?vfs=llmos-fault``).
    """
    with _INSTALL_LOCK:
        if _INSTALLED.fault is not None:
            _INSTALLED.fault.make_default()
            return _INSTALLED.fault
        if _INSTALLED.broken:
            raise FaultVfsUnavailable(_INSTALLED.broken)
        lib = _library()
        lib.sqlite3_vfs_find.restype = _vp
        lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
        lib.sqlite3_vfs_register.restype = ctypes.c_int
        lib.sqlite3_vfs_register.argtypes = [_vp, ctypes.c_int]
        orig_ptr = lib.sqlite3_vfs_find(None)
        if not orig_ptr:
            raise FaultVfsUnavailable("SQLite has no default VFS")
        orig = Vfs.from_address(orig_ptr)
        if orig.iVersion < 1 or orig.szOsFile <= 0:
            raise FaultVfsUnavailable(f"unexpected default VFS (version {orig.iVersion})")
        fault = FaultVFS()
        vfs = Vfs()
        ctypes.memmove(ctypes.byref(vfs), orig_ptr, min(ctypes.sizeof(Vfs), _vfs_size(orig)))
        name = ctypes.create_string_buffer(VFS_NAME)
        vfs.zName = ctypes.cast(name, ctypes.c_char_p)
        vfs.pNext = None
        real_open = XOPEN(orig.xOpen)

        def x_open(_vfs: int, zname: int, file: int, flags: int, out_flags: object) -> int:
            try:
                # the file belongs to the original VFS in every respect (pAppData, pVfs)
                rc = int(real_open(orig_ptr, zname, file, flags, out_flags))
                if rc != SQLITE_OK or not fault.wraps(
                    ctypes.string_at(zname).decode("utf-8", "replace") if zname else None
                ):
                    return rc
                methods = _vp.from_address(file)  # sqlite3_file.pMethods, its first member
                if methods.value:
                    methods.value = _wrapped_methods(methods.value, fault)
                return rc
            except BaseException:
                return SQLITE_IOERR

        cb = XOPEN(x_open)
        vfs.xOpen = ctypes.cast(cb, _vp).value
        _keep(vfs, name, real_open, cb)
        _INSTALLED.lib, _INSTALLED.vfs, _INSTALLED.orig_ptr = lib, vfs, orig_ptr
        if lib.sqlite3_vfs_register(ctypes.byref(vfs), 1) != SQLITE_OK:
            raise FaultVfsUnavailable("sqlite3_vfs_register failed")
        try:
            _probe(fault)
        except FaultVfsUnavailable as exc:
            fault.restore_default()  # a shim that does not work must not stay the default
            _INSTALLED.broken = str(exc)
            raise
        _INSTALLED.fault = fault
        return fault


def _vfs_size(orig: Vfs) -> int:
    """Bytes of the original struct that exist for its iVersion (never read past its end)."""
    last = {1: "xGetLastError", 2: "xCurrentTimeInt64", 3: "xNextSystemCall"}
    field_name = last.get(orig.iVersion, "xNextSystemCall")
    return getattr(Vfs, field_name).offset + ctypes.sizeof(_vp)


def _probe(fault: FaultVFS) -> None:
    """Check that the stdlib module sees the shim, and that a fault really reaches it."""
    with tempfile.TemporaryDirectory(prefix="llmos-vfs-probe-") as d:
        path = Path(d) / "probe.db"
        before = fault.root
        fault.set_root(d)
        try:
            try:
                db = sqlite3.connect(f"file:{path}?vfs={VFS_NAME.decode()}", uri=True)
            except sqlite3.OperationalError as exc:
                raise FaultVfsUnavailable(
                    f"the stdlib sqlite3 does not see a VFS registered through ctypes ({exc});"
                    " is _sqlite3 linked statically?"
                ) from None
            try:
                db.execute("CREATE TABLE t (x)")
                db.commit()
                fault.arm(1, ops={"write"})
                try:
                    db.execute("INSERT INTO t VALUES (1)")
                    db.commit()
                except sqlite3.OperationalError:
                    pass
                finally:
                    fault.disarm()
                if fault.fired != 1:
                    raise FaultVfsUnavailable("the shim was registered but never called")
            finally:
                db.close()
        finally:
            fault.set_root(before)
            fault.calls = dict.fromkeys(OPS, 0)
            fault.fired = 0
