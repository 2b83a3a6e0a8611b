"""Text generation from a local causal LM: streaming, batching, sampling, int8 on CPU.

    gen = Generator.from_dir("models/lm")            # our run dir, a checkpoint, or any HF dir
    for delta in gen.stream([{"role": "user", "content": "hi"}], max_new_tokens=60):
        print(delta, end="")

For Llama-family models decoding runs on :class:`lm.fastdecode.FastLlama` (fused
projections, weights laid out for matrix-vector products, a static per-call KV cache,
``torch.inference_mode``); other architectures use
the transformers forward with a ``DynamicCache``. Each call owns its cache and its random
generator, so one ``Generator`` serves concurrent server requests without sharing state; the
weights are only read. ``quantize=True`` applies int8 dynamic quantization to the linear
layers (CPU only), which is faster for models whose matmuls dominate (see
``benchmarks/lm_generate.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lm.errors import LMError
from lm.sampling import SamplingOptions, select

Prompt = str | Sequence[dict[str, str]]
MAX_PROMPT_CHARS = 200_000


class Generator:
    """Generate text with a loaded causal LM and its tokenizer.

    Args:
        model: a transformers causal LM (eval mode).
        tokenizer: its tokenizer (chat template used for message prompts).
        name: shown by the assistant (``Reply.data["model"]``).
        quantize: int8 dynamic quantization of linear layers (CPU).
        fast: use the lean Llama decode path when the model supports it.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "",
        quantize: bool = False,
        fast: bool = True,
    ) -> None:
        import torch

        from lm import fastdecode

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", "") or "lm"
        self.quantized = quantize
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        self._fast = None
        if fast and fastdecode.supports(model):
            self._fast = fastdecode.FastLlama(model).eval()
        if quantize:
            from torch.ao.quantization import quantize_dynamic

            target = self._fast if self._fast is not None else self.model
            with warnings.catch_warnings():  # torch flags its quantized dtypes as deprecated
                warnings.simplefilter("ignore")
                q = quantize_dynamic(target, {torch.nn.Linear}, dtype=torch.qint8)
            if self._fast is not None:
                self._fast = q
            else:
                self.model = q
        stop_ids = {tokenizer.eos_token_id}
        end = (
            tokenizer.convert_tokens_to_ids("<|end|>")
            if "<|end|>" in tokenizer.get_vocab()
            else None
        )
        if end is not None:
            stop_ids.add(end)
        self.stop_ids = {int(i) for i in stop_ids if i is not None}
        self.pad_id = (
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id or 0
        )
        self._cache_arg = _cache_kwarg(self.model)  # for the transformers path (no fast path)

    @classmethod
    def from_dir(cls, path: str | Path, quantize: bool = False, fast: bool = True) -> Generator:
        """Load a model directory (refuses pickle weights) and wrap it."""
        from lm.loading import load_causal_lm

        loaded = load_causal_lm(path)
        return cls(loaded.model, loaded.tokenizer, name=loaded.name, quantize=quantize, fast=fast)

    # -- prompts ---------------------------------------------------------------------------
    def encode_prompt(self, prompt: Prompt) -> list[int]:
        from lm.data import render_chat

        if isinstance(prompt, str):
            if len(prompt) > MAX_PROMPT_CHARS:
                raise LMError(
                    f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}"
                )
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            msgs = list(prompt)
            if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
                raise LMError("messages must be dicts with 'role' and string 'content'")
            text = render_chat(self.tokenizer, msgs, add_generation_prompt=True)
            if len(text) > MAX_PROMPT_CHARS:
                raise LMError(f"prompt is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            ids = [self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0]
        return list(ids)

    def _fit(self, ids: list[int], max_new: int) -> tuple[list[int], int]:
        """Clip the prompt (oldest tokens first) and the budget to the context window."""
        max_new = max(1, min(max_new, self.max_positions // 2))
        keep = self.max_positions - max_new
        return ids[-keep:], max_new

    # -- decoding core -----------------------------------------------------------------------
    def _token_steps(self, rows: list[list[int]], opts: SamplingOptions) -> Iterator[Any]:
        """Yield the next token of every row, shape (B,), until the budget is spent."""
        import torch

        gen = torch.Generator()
        gen.manual_seed(
            opts.seed if opts.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        )
        B = len(rows)
        T = max(len(r) for r in rows)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        real = torch.zeros((B, T + opts.max_new_tokens), dtype=torch.bool)
        for i, r in enumerate(rows):  # left padding keeps every row's last token at T-1
            ids[i, T - len(r) :] = torch.tensor(r, dtype=torch.long)
            real[i, T - len(r) :] = True
        padded = bool((~real[:, :T]).any())
        pos = (real[:, :T].long().cumsum(-1) - 1).clamp(min=0)
        vocab = self._vocab_size()
        seen = None
        if opts.repetition_penalty != 1.0:
            seen = torch.zeros((B, vocab), dtype=torch.bool)
            seen.scatter_(1, ids.clamp(max=vocab - 1), real[:, :T])
        with torch.inference_mode():
            if self._fast is not None:
                cache = self._fast.new_cache(B, T + opts.max_new_tokens)
                mask = real if padded else None
                # Without left padding every position is its cache slot: no position tensor.
                fpos = pos if padded else None
                logits = self._fast(ids, fpos, cache, 0, mask)
                start = T
                for _ in range(opts.max_new_tokens):
                    nxt = select(logits[:, :vocab], opts, seen, gen)
                    yield nxt
                    if seen is not None:
                        seen[torch.arange(B), nxt] = True
                    if fpos is not None:
                        fpos = fpos[:, -1:] + 1
                    logits = self._fast(nxt[:, None], fpos, cache, start, mask)
                    start += 1
            else:
                from transformers import DynamicCache

                # The model fills this cache in place at every call. transformers 5.x renamed
                # the argument from ``past_key_values`` to ``cache`` (the old name warns, and
                # goes in 5.40); pass whichever this version takes.
                dyn_cache = DynamicCache(config=self.model.config)
                kv = {self._cache_arg: dyn_cache}
                attn = real[:, :T].long()
                out = self.model(
                    input_ids=ids,
                    attention_mask=attn,
                    position_ids=pos,
                    use_cache=True,
                    logits_to_keep=1,
                    **kv,
                )
                for _ in range(opts.max_new_tokens):
                    nxt = select(out.logits[:, -1, :vocab].float(), opts, seen, gen)
                    yield nxt
                    if seen is not None:
                        seen[torch.arange(B), nxt] = True
                    attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype)], dim=1)
                    pos = pos[:, -1:] + 1
                    out = self.model(
                        input_ids=nxt[:, None],
                        attention_mask=attn,
                        position_ids=pos,
                        use_cache=True,
                        **kv,
                    )

    def _vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def _options(self, kw: dict[str, Any]) -> SamplingOptions:
        stop = kw.pop("stop", None) or []
        if isinstance(stop, str):
            stop = [stop]
        try:
            opts = SamplingOptions(stop=list(stop), **kw)
        except TypeError as exc:
            raise LMError(f"unknown generation option: {exc}") from None
        opts.validate()
        return opts

    # -- public API --------------------------------------------------------------------------
    def stream(self, prompt: Prompt, **options: Any) -> Iterator[str]:
        """Yield text deltas as they are generated; joined they equal ``generate()``.

        Options: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
        ``repetition_penalty``, ``stop`` (strings), ``seed``, ``greedy``.
        """
        opts = self._options(dict(options))
        ids, opts.max_new_tokens = self._fit(self.encode_prompt(prompt), opts.max_new_tokens)
        out: list[int] = []
        sent = 0  # characters of the decoded text already yielded
        hold = max((len(s) for s in opts.stop), default=1) - 1
        for nxt in self._token_steps([ids], opts):
            tok = int(nxt[0])
            if tok in self.stop_ids:
                break
            out.append(tok)
            text = self._text(out)
            cut = _first_stop(text, opts.stop)
            if cut is not None:
                if cut > sent:
                    yield text[sent:cut]
                return
            # Hold back anything that could start a stop string.
            safe = len(text) - hold if opts.stop else len(text)
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        text = self._text(out)
        cut = _first_stop(text, opts.stop)
        text = text[:cut] if cut is not None else text
        if len(text) > sent:
            yield text[sent:]

    def _text(self, ids: list[int]) -> str:
        """Decoded text without U+FFFD. A byte-level model emits bytes: a character cut off
        by the token limit, or bytes an undertrained model strings together that form no
        character, decode to U+FFFD, which is noise to a reader. Dropping it everywhere also
        holds back a character still being spelled out, so the stream stays append-only."""
        return self.tokenizer.decode(ids, skip_special_tokens=True).replace("\ufffd", "")

    def generate(self, prompt: Prompt, **options: Any) -> str:
        """The whole completion as one string."""
        return "".join(self.stream(prompt, **options))

    def generate_batch(self, prompts: Sequence[Prompt], **options: Any) -> list[str]:
        """Complete several prompts in one batched decode (left padding)."""
        if not prompts:
            return []
        opts = self._options(dict(options))
        rows = []
        max_new = opts.max_new_tokens
        for p in prompts:
            ids, max_new = self._fit(self.encode_prompt(p), opts.max_new_tokens)
            rows.append(ids)
        opts.max_new_tokens = max_new
        outs: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        for nxt in self._token_steps(rows, opts):
            for i, tok in enumerate(nxt.tolist()):
                if done[i]:
                    continue
                if tok in self.stop_ids:
                    done[i] = True
                    continue
                outs[i].append(tok)
                if (
                    opts.stop
                    and _first_stop(
                        self.tokenizer.decode(outs[i], skip_special_tokens=True), opts.stop
                    )
                    is not None
                ):
                    done[i] = True
            if all(done):
                break
        texts = []
        for o in outs:
            text = self._text(o)
            cut = _first_stop(text, opts.stop)
            texts.append(text[:cut] if cut is not None else text)
        return texts


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _cache_kwarg(model: Any) -> str:
    """The KV-cache argument of ``model``'s forward: ``cache`` in newer transformers 5.x
    releases, ``past_key_values`` before (and, deprecated, until 5.40)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
