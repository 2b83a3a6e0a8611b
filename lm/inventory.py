"""What models a project holds: ``llmos models`` lists checkpoint directories under models/."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from lm.checkpoint import read_manifest
from lm.errors import CheckpointError


def _safetensors_params(path: Path) -> int | None:
    """Parameter count from a safetensors header (no tensor data read)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return None
    total = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for d in meta.get("shape", []):
            count *= int(d)
        total += count
    return total


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def describe(path: Path) -> dict[str, Any]:
    try:
        manifest = read_manifest(path)
    except CheckpointError:
        manifest = {}
    kind = manifest.get("kind")
    if not kind:
        kind = "lora" if (path / "adapter_config.json").exists() else "hf"
    params = manifest.get("parameters")
    if params is None:
        for name in ("model.safetensors", "adapter_model.safetensors"):
            if (path / name).is_file():
                params = _safetensors_params(path / name)
    return {
        "dir": str(path),
        "kind": kind,
        "parameters": params,
        "size_bytes": _dir_size(path),
        "eval_loss": manifest.get("eval_loss"),
        "step": manifest.get("step"),
        "complete": bool(manifest.get("files")) or not manifest,
    }


def list_models(models_dir: Path, max_depth: int = 3) -> list[dict[str, Any]]:
    """Every checkpoint directory (has config.json or adapter_config.json) under ``models_dir``."""
    found: list[dict[str, Any]] = []
    if not models_dir.is_dir():
        return found

    def walk(d: Path, depth: int) -> None:
        if ".tmp-" in d.name or ".old-" in d.name:
            return
        if (d / "config.json").is_file() or (d / "adapter_config.json").is_file():
            found.append(describe(d))
            return
        if depth < max_depth:
            for sub in sorted(p for p in d.iterdir() if p.is_dir()):
                walk(sub, depth + 1)

    walk(models_dir, 0)
    return found
