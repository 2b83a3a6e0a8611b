"""Checkpoint directories: Hugging Face model dirs with safetensors weights, written atomically.

A checkpoint directory holds what ``from_pretrained`` needs (``config.json``,
``model.safetensors`` or a LoRA ``adapter_model.safetensors``, the tokenizer files) plus:

* ``llmos.json``: our manifest (kind, preset, step, eval loss, parameter count, and the size and
  sha256 of every file); it is written last, so a directory without it is incomplete;
* ``training_state.safetensors`` / ``training_state.json`` (resumable checkpoints only): the
  optimizer's tensors, the RNG states, and the JSON-able rest (step, loss curve, config).

Nothing here unpickles: weights load only from safetensors, and a directory that offers only
pickle-based weights (``pytorch_model.bin``, ``*.pt``) is refused with ``UnsafeCheckpointError``.

Writes go to ``<dir>.tmp-XXXX`` (every file fsynced), then the old directory is renamed aside
and the new one renamed into place, so a crash leaves either the old or the new checkpoint;
``resolve_model_dir`` recovers the renamed-aside copy if a crash hit between the two renames.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm.errors import CheckpointError, UnsafeCheckpointError

MANIFEST = "llmos.json"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checkpoint_dir(
    target: Path, fill: Callable[[Path], None], manifest: dict[str, Any]
) -> Path:
    """Atomically (re)place directory ``target`` with what ``fill(tmp_dir)`` writes.

    ``manifest`` is completed with file sizes and hashes and written last as ``llmos.json``.
    """
    target = Path(target)
    tmp: Path | None = None
    old: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f"{target.name}.tmp-*"):  # left by a killed writer
            shutil.rmtree(stale, ignore_errors=True)
        if target.is_dir():  # superseded copies a crash left after the second rename
            for stale in target.parent.glob(f"{target.name}.old-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.tmp-"))
        fill(tmp)
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                _fsync_file(f)
                files[str(f.relative_to(tmp))] = {
                    "size": f.stat().st_size,
                    "sha256": sha256_file(f),
                }
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=2))
        _fsync_file(tmp / MANIFEST)
        _fsync_dir(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.old-"))
            old.rmdir()
            os.rename(target, old)
        os.rename(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            # the second rename failed: put the previous checkpoint back (if this fails too,
            # resolve_model_dir() recovers it from <dir>.old-* on the next load)
            with contextlib.suppress(OSError):
                os.rename(old, target)
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":
            # disk full or an I/O error: the old checkpoint is untouched; say so on one line
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            msg = msg.splitlines()[0] if msg.strip() else type(exc).__name__
            raise CheckpointError(
                f"cannot write the checkpoint {target} ({msg}); the previous one is intact"
            ) from None
        raise
    # the new checkpoint is in place: a failure from here on must not be reported as a
    # failed write (and must not leave the old copy behind)
    with contextlib.suppress(OSError):
        _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(path) / MANIFEST).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {MANIFEST} is not a JSON object")
    return data


def is_complete(path: Path) -> bool:
    """True when ``path`` is a checkpoint whose manifest lists files that are all present."""
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except CheckpointError:
        return False
    files = manifest.get("files")
    if not manifest or not isinstance(files, dict):
        return False
    for name, meta in files.items():
        f = path / name
        if not f.is_file() or f.stat().st_size != meta.get("size"):
            return False
    return True


def resolve_model_dir(path: str | Path) -> Path:
    """The checkpoint to load for ``path``: itself, or ``best/``/``last/`` of a training run.

    Recovers ``<dir>.old-*`` left by a crash between the two renames of an atomic write.
    """
    path = Path(path).expanduser()
    if not path.exists():
        olds = sorted(path.parent.glob(f"{path.name}.old-*")) if path.parent.is_dir() else []
        complete = [o for o in olds if is_complete(o)]
        if complete:
            os.rename(complete[-1], path)
        else:
            raise CheckpointError(f"model directory not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"not a model directory: {path}")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        for sub in ("best", "last", "merged"):
            if (path / sub).is_dir():
                return resolve_model_dir(path / sub)
    return path


def check_weights(path: Path) -> str:
    """Name of the safetensors weight file in ``path``; refuses pickle-only directories."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return name
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeCheckpointError(
            f"{path} holds pickle-based weights ({', '.join(pickles)}); llmos loads only "
            "safetensors — convert them with a tool you trust"
        )
    raise CheckpointError(f"{path} has no model weights (model.safetensors is missing)")


def validate_dir(path: Path) -> dict[str, Any]:
    """Check a model directory before loading anything from it; return its manifest."""
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise CheckpointError(f"{path} is not a model directory (config.json is missing)")
    check_weights(path)
    manifest = read_manifest(path)
    for name, meta in (manifest.get("files") or {}).items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path} is incomplete: {name} is missing")
        if f.stat().st_size != meta.get("size"):
            raise CheckpointError(f"{path} is damaged: {name} has the wrong size")
    return manifest


# -- training state -----------------------------------------------------------------------


def save_training_state(
    dst: Path, optimizer: Any, state: dict[str, Any], rng: dict[str, Any] | None = None
) -> None:
    """Optimizer tensors and RNG states to safetensors; everything else to JSON."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    opt = optimizer.state_dict() if optimizer is not None else {"state": {}, "param_groups": []}
    for idx, pstate in opt["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    for key, value in (rng or {}).items():
        tensors[f"rng.{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(dst / STATE_TENSORS))
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in opt["param_groups"]
    ]
    payload = {**state, "optimizer": {"param_groups": groups, "scalars": scalars}}
    (dst / STATE_JSON).write_text(json.dumps(payload, indent=2))


def load_training_state(src: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return ``(state_json, optimizer_state_dict, rng_tensors)`` saved by the function above."""
    from safetensors.torch import load_file

    try:
        payload = json.loads((src / STATE_JSON).read_text())
        tensors = load_file(str(src / STATE_TENSORS))
    except FileNotFoundError:
        raise CheckpointError(f"{src} has no training state to resume from") from None
    except Exception as exc:
        raise CheckpointError(f"{src}: unreadable training state: {exc}") from None
    opt_meta = payload.pop("optimizer", {"param_groups": [], "scalars": {}})
    state: dict[int, dict[str, Any]] = {}
    rng: dict[str, Any] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "rng":
            rng[rest] = value
        else:
            idx, _, name = rest.partition(".")
            state.setdefault(int(idx), {})[name] = value
    for idx, values in opt_meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return payload, {"state": state, "param_groups": opt_meta["param_groups"]}, rng
