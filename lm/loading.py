"""Load a causal LM and its tokenizer from a local directory, safely.

Accepts our checkpoints (a run directory with ``best/``/``last/``, or one checkpoint), any
local Hugging Face causal-LM directory with safetensors weights, and LoRA adapter checkpoints
written by ``llmos finetune --lora`` (their manifest names the base directory). Pickle weights
are refused before anything is opened; shapes that do not match the config are a one-line
``CheckpointError`` naming the tensor, never a partial load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm.checkpoint import check_weights, resolve_model_dir, validate_dir
from lm.errors import CheckpointError


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(
            self.manifest.get("name") or self.path.parent.name
            if self.path.name in {"best", "last", "merged"}
            else self.path.name
        )


def base_fingerprint(path: Path) -> str:
    """Identity of a base model: its config plus the names, shapes and a sample of its weights."""
    from safetensors import safe_open

    path = resolve_model_dir(path)
    h = hashlib.sha256((path / "config.json").read_bytes())
    weights = path / check_weights(path)
    if weights.name.endswith(".safetensors"):
        with safe_open(str(weights), framework="pt") as f:
            for key in sorted(f.keys()):
                t = f.get_slice(key)
                h.update(f"{key}:{t.get_shape()}".encode())
            first = sorted(f.keys())[0]
            h.update(f.get_tensor(first).flatten()[:64].numpy().tobytes())
    return h.hexdigest()[:16]


def _load_base(path: Path, dtype: Any) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}/config.json is not a valid model config: {exc}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            config=config,
            local_files_only=True,
            use_safetensors=True,
            dtype=dtype,
            attn_implementation="sdpa",
        )
    except ValueError as exc:
        raise CheckpointError(f"{path}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the model in {path}: {msg}") from None
    _check_loaded(model, path)
    return model


def _check_loaded(model: Any, path: Path) -> None:
    """transformers warns and re-initialises on missing/mismatched tensors; we refuse instead."""
    from safetensors import safe_open

    weights = path / check_weights(path)
    if not weights.name.endswith(".safetensors") or weights.name.startswith("adapter"):
        return
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(weights), framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    for key, shape in saved.items():
        if key in expected and expected[key] != shape:
            raise CheckpointError(
                f"{path}: tensor {key} has shape {shape} but the config needs {expected[key]}"
            )
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [k for k in expected if k not in saved and not (tied and k == "lm_head.weight")]
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if missing:
        raise CheckpointError(f"{path} is missing weights: {', '.join(missing[:3])}")


def load_causal_lm(path: str | Path, *, dtype: Any = None, merge_lora: bool = True) -> LoadedModel:
    """Model (eval mode, CPU) and tokenizer from ``path``; LoRA adapters are applied to their base."""
    import torch

    from lm._quiet import quiet_transformers
    from lm.tokenizer import load_tokenizer

    quiet_transformers()

    dtype = dtype or torch.float32
    path = resolve_model_dir(path)
    manifest = validate_dir(path)
    if (path / "adapter_config.json").is_file():
        loaded = load_lora(path, manifest, dtype=dtype, trainable=False)
        if merge_lora:
            loaded.model = loaded.model.merge_and_unload()
        loaded.model.eval()
        return loaded
    model = _load_base(path, dtype)
    model.eval()
    return LoadedModel(model=model, tokenizer=load_tokenizer(path), path=path, manifest=manifest)


def load_lora(path: Path, manifest: dict[str, Any], *, dtype: Any, trainable: bool) -> LoadedModel:
    """A base model with the LoRA adapter in ``path``; checks the adapter was made for it."""
    base_dir = manifest.get("base_dir")
    if not base_dir:
        try:
            base_dir = json.loads((path / "adapter_config.json").read_text()).get(
                "base_model_name_or_path"
            )
        except (OSError, ValueError):
            base_dir = None
    if not base_dir or not Path(base_dir).exists():
        raise CheckpointError(f"{path}: the LoRA adapter's base model {base_dir!r} was not found")
    return attach_lora(Path(base_dir), path, manifest, dtype=dtype, trainable=trainable)


def attach_lora(
    base_dir: Path,
    adapter_dir: Path,
    manifest: dict[str, Any],
    *,
    dtype: Any,
    trainable: bool,
) -> LoadedModel:
    from peft import PeftModel

    from lm.tokenizer import load_tokenizer

    base_dir = resolve_model_dir(base_dir)
    want = manifest.get("base_fingerprint")
    if want and want != base_fingerprint(base_dir):
        raise CheckpointError(
            f"the LoRA adapter in {adapter_dir} was trained for another base model, not {base_dir}"
        )
    validate_dir(base_dir)
    base = _load_base(base_dir, dtype)
    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"the LoRA adapter in {adapter_dir} does not fit the base {base_dir}: {msg[:200]}"
        ) from None
    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    return LoadedModel(
        model=model, tokenizer=load_tokenizer(tok_dir), path=adapter_dir, manifest=manifest
    )
