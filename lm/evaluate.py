"""Held-out loss, perplexity and throughput of a causal LM: ``llmos eval lm``.

Text files are scored in consecutive non-overlapping windows of the model's context (each
token predicted once, with up to one window of left context, as nanoGPT's eval does), so the
figure is comparable across models with the same tokenizer. Chat JSONL is scored on the
rendered conversations.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from lm.checkpoint import write_json_atomic
from lm.errors import DataError


def _documents(path: Path) -> list[str]:
    from lm.data import read_chat_jsonl, read_corpus

    if path.suffix == ".jsonl":
        return [
            "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in c)
            for c in read_chat_jsonl(path)
        ]
    return read_corpus([path])


def evaluate_lm(
    model_dir: str | Path,
    data: str | Path,
    *,
    max_tokens: int | None = None,
    batch_size: int = 8,
    generator: Any = None,
) -> dict[str, Any]:
    """Loss (nats/token), perplexity and scoring tokens/s of the model on ``data``."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from lm.data import encode_documents
    from lm.loading import load_causal_lm

    loaded = load_causal_lm(model_dir)
    model, tok = loaded.model, loaded.tokenizer
    data = Path(data).expanduser()
    tokens = encode_documents(tok, _documents(data))
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    block = int(getattr(model.config, "max_position_embeddings", 1024))
    block = min(block, 1024)
    if len(tokens) < 2:
        raise DataError(f"{data} has too little text to evaluate")
    n_windows = max(1, (len(tokens) - 1) // block)
    starts = list(range(0, n_windows * block, block))
    total_loss, count = 0.0, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size):
            chunk = starts[i : i + batch_size]
            span = min(block, len(tokens) - 1 - chunk[-1])
            win = np.stack([tokens[s : s + span + 1] for s in chunk]).astype(np.int64)
            w = torch.from_numpy(win)
            logits = model(input_ids=w[:, :-1], use_cache=False).logits.float()
            loss = F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum")
            total_loss += float(loss)
            count += w[:, 1:].numel()
    elapsed = time.perf_counter() - t0
    mean_loss = total_loss / count
    return {
        "model": str(loaded.path),
        "data": str(data),
        "tokens": count,
        "loss": mean_loss,
        "perplexity": math.exp(min(mean_loss, 50.0)),
        "bits_per_token": mean_loss / math.log(2),
        "tokens_per_s": count / max(elapsed, 1e-9),
        "context": block,
    }


def write_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``lm_eval.json`` and ``lm_eval.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "lm_eval.json"
    write_json_atomic(js, result)
    md = out_dir / "lm_eval.md"
    lines = [
        "# Language model evaluation",
        "",
        f"- model: `{result['model']}`",
        f"- data: `{result['data']}` ({result['tokens']:,} tokens, context {result['context']})",
        "",
        "| loss (nats/token) | perplexity | bits/token | scoring tokens/s |",
        "|---:|---:|---:|---:|",
        f"| {result['loss']:.4f} | {result['perplexity']:.2f} | {result['bits_per_token']:.3f} | {result['tokens_per_s']:,.0f} |",
        "",
    ]
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md)
    return md, js


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
