"""Training data: plain-text corpora for pretraining and chat JSONL for fine-tuning.

Everything here validates before it tokenizes, so a wrong file gives one clear ``DataError``
(empty, binary, too small for one context window, malformed JSONL line N) instead of a
confusing failure twenty minutes into training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lm.errors import DataError

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text", ".raw", ".tokens"}
MAX_CORPUS_BYTES = 2 * 1024**3
ROLES = {"system", "user", "assistant"}


def _looks_binary(raw: bytes) -> bool:
    head = raw[:8192]
    if b"\x00" in head:
        return True
    text = head.decode("utf-8", errors="replace")
    return text.count("\ufffd") > max(8, len(text) // 50)


def read_text_file(path: Path) -> str:
    """Decode one corpus file as UTF-8 text, refusing binary content."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if _looks_binary(raw):
        raise DataError(f"{path} looks like a binary file, not text")
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n")


def corpus_files(paths: list[str | Path]) -> list[Path]:
    """Expand files and directories (text files inside, recursively) into a sorted file list."""
    if not paths:
        raise DataError("no corpus given: pass --corpus FILE_OR_DIR")
    files: list[Path] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
            if not found:
                raise DataError(f"{p} contains no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"corpus path not found: {p}")
    total = sum(f.stat().st_size for f in files)
    if total > MAX_CORPUS_BYTES:
        raise DataError(f"corpus is {total / 1e9:.1f} GB; the limit is 2 GB")
    return files


def read_corpus(paths: list[str | Path]) -> list[str]:
    """Documents (one per file) of a corpus; raises ``DataError`` when there is no text."""
    docs = [read_text_file(f) for f in corpus_files(paths)]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(
            "the corpus is empty: no non-whitespace text in " + ", ".join(map(str, paths))
        )
    return docs


def encode_documents(tokenizer: Any, docs: list[str]) -> np.ndarray:
    """Token ids of all documents, each followed by EOS, as one int32 array."""
    eos = tokenizer.eos_token_id
    chunks: list[np.ndarray] = []
    for doc in docs:
        # Encode line blocks rather than one huge string: fast tokenizers parallelise batches.
        lines = doc.splitlines(keepends=True)
        blocks = ["".join(lines[i : i + 64]) for i in range(0, len(lines), 64)] or [doc]
        enc = tokenizer(blocks, add_special_tokens=False)["input_ids"]
        for ids in enc:
            chunks.append(np.asarray(ids, dtype=np.int32))
        chunks.append(np.asarray([eos], dtype=np.int32))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)


@dataclass
class TokenSplit:
    """Train and held-out token streams (the held-out part is the corpus tail, as nanoGPT)."""

    train: np.ndarray
    val: np.ndarray


def split_tokens(tokens: np.ndarray, block_size: int, val_fraction: float = 0.1) -> TokenSplit:
    need = 2 * (block_size + 1)
    if len(tokens) < need:
        raise DataError(
            f"the corpus has {len(tokens)} tokens, fewer than two context windows "
            f"({need}); give more text or a smaller --block-size"
        )
    n_val = max(block_size + 1, int(len(tokens) * val_fraction))
    n_val = min(n_val, len(tokens) - (block_size + 1))
    return TokenSplit(train=tokens[:-n_val], val=tokens[-n_val:])


def get_batch(
    data: np.ndarray, block_size: int, batch_size: int, generator: Any
) -> tuple[Any, Any]:
    """Random contiguous windows ``x`` and their next-token targets ``y``, shape (B, T)."""
    import torch

    high = len(data) - block_size - 1
    ix = torch.randint(0, max(1, high + 1), (batch_size,), generator=generator).tolist()
    windows = np.stack([data[i : i + block_size + 1] for i in ix]).astype(np.int64)
    t = torch.from_numpy(windows)
    return t[:, :-1], t[:, 1:]


# -- chat fine-tuning data -----------------------------------------------------------------


def read_chat_jsonl(path: str | Path) -> list[list[dict[str, str]]]:
    """Conversations from JSONL lines ``{"messages": [{"role": ..., "content": ...}, ...]}``."""
    path = Path(path).expanduser()
    text = read_text_file(path)
    convs: list[list[dict[str, str]]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f'{path}:{n}: expected {{"messages": [...]}} with at least one message')
        clean = []
        for m in msgs:
            if (
                not isinstance(m, dict)
                or m.get("role") not in ROLES
                or not isinstance(m.get("content"), str)
            ):
                raise DataError(
                    f"{path}:{n}: each message needs a role (system/user/assistant) and string content"
                )
            clean.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "assistant" for m in clean):
            raise DataError(f"{path}:{n}: the conversation has no assistant message to learn from")
        convs.append(clean)
    if not convs:
        raise DataError(f"{path} holds no conversations")
    return convs


def render_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    # A base model without a template: a plain, readable transcript format.
    out = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return out + ("Assistant:" if add_generation_prompt else "")


def encode_chat(
    tokenizer: Any, messages: list[dict[str, str]], max_len: int
) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and labels that are -100 everywhere but assistant replies.

    Works with any prefix-stable chat template: the text each assistant message adds is found
    by rendering the conversation up to it, so no template needs special markers.
    """
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
            full = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False)
            segments = [(prompt, False), (full, True)]
        else:
            segments = [
                (render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False), False)
            ]
        for text, train in segments:
            if not text.startswith(done):
                raise DataError(
                    "the tokenizer's chat template is not prefix-stable; cannot mask prompts"
                )
            piece = text[len(done) :]
            done = text
            if not piece:
                continue
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            ids.extend(piece_ids)
            labels.extend(piece_ids if train else [-100] * len(piece_ids))
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return ids[:max_len], labels[:max_len]
