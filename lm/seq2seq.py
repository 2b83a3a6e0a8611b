"""Encoder-decoder models trained locally: the translator and the abstractive summarizer.

    llmos train translator --pairs train.en train.de --src en --tgt de --time 45m
    model = Seq2Seq.from_dir("models/translator-en-de")
    model.generate(["A man rides a bike."], beam_size=5)

Why Marian (``MarianConfig`` / ``MarianMTModel``) and not BART: it is the architecture of the
MarianMT / OPUS-MT checkpoints a user downloads, so our checkpoints and theirs load through one
class and one ``generate``; it is the original post-norm Transformer with sinusoidal positions
(no learned position table to under-train on a small corpus) and one shared source/target
embedding tied to the output layer, which is the recipe known to work for small parallel
corpora such as Multi30k. BART adds a denoising pre-training story we do not use here.

Pieces:

* a shared byte-level BPE tokenizer trained on both sides of the pairs (no unknown input), saved
  as a Hugging Face tokenizer in the checkpoint directory;
* presets sized for 2 CPU cores (``tiny`` for tests, ``small`` for Multi30k) up to a GPU
  (``base``);
* a training loop with token-count batches bucketed by length, label smoothing, warmup + cosine
  (or inverse-sqrt) learning rate, gradient clipping, a step / epoch / wall-clock budget,
  periodic validation loss, ``best/`` and resumable ``last/`` checkpoints (safetensors plus a
  training-state file, see :mod:`lm.checkpoint`), a tqdm bar and ``loss_curve.png``;
* :class:`Seq2Seq`: batched beam search through transformers' ``generate``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lm.checkpoint import (
    is_complete,
    load_training_state,
    resolve_model_dir,
    save_training_state,
    validate_dir,
    write_checkpoint_dir,
)
from lm.errors import CheckpointError, LMError, MissingDependencyError
from lm.optim import lr_at, make_optimizer, restore_optimizer, set_lr
from lm.seq2seq_data import Pair, PairStats, filter_pairs, read_pairs

ProgressFn = Callable[[int, int, dict[str, Any]], None]
WARMUP_FRACTION = 0.25  # longest warmup, as a fraction of the budget

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL = [PAD, EOS, UNK]  # ids 0, 1, 2: pad doubles as the decoder start token (Marian's rule)


# -- presets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seq2SeqPreset:
    d_model: int
    layers: int  # encoder and decoder each
    heads: int
    ffn: int
    vocab_size: int
    learning_rate: float
    warmup_steps: int
    batch_tokens: int  # padded tokens of the longer side per batch
    dropout: float
    eval_interval: int


PRESETS = {
    # Trains end to end in seconds: for tests and smoke runs.
    "tiny": Seq2SeqPreset(64, 1, 2, 128, 400, 3e-3, 10, 600, 0.0, 20),
    # The Multi30k recipe on 2 CPU cores (7.3M parameters; ~10 epochs in 50 minutes).
    "small": Seq2SeqPreset(256, 3, 4, 1024, 6000, 1e-3, 400, 1000, 0.1, 250),
    # Transformer-base: for a GPU.
    "base": Seq2SeqPreset(512, 6, 8, 2048, 16000, 7e-4, 4000, 8000, 0.1, 1000),
}


def get_preset(name: str) -> Seq2SeqPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise LMError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# -- tokenizer --------------------------------------------------------------------------------


def train_shared_bpe(texts: list[str], vocab_size: int, model_max_length: int = 512) -> Any:
    """Byte-level BPE over source and target text together; appends ``</s>`` to every encoding.

    One vocabulary for both languages lets the model tie its input and output embeddings and
    copy names and numbers across; byte-level means no input is ever unknown.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, 300),
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((texts[i : i + 1000] for i in range(0, len(texts), 1000)), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def _load_tokenizer(path: Path) -> Any:
    """Our tokenizer.json, or a downloaded MarianMT directory's SentencePiece files.

    A MarianMT / OPUS-MT directory holds ``source.spm``/``target.spm`` plus ``vocab.json``;
    ``transformers.MarianTokenizer`` reads them and needs the ``sentencepiece`` package (the
    ``marian`` extra), so its absence is a one-line :class:`MissingDependencyError`.
    """
    if (path / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        try:
            return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot load the tokenizer in {path}: {exc}") from None
    if (path / "source.spm").is_file() or (path / "target.spm").is_file():
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                f"{path} is a MarianMT directory; its sentencepiece tokenizer needs the "
                "sentencepiece package: pip install sentencepiece (or llmos[marian])"
            ) from None
        import warnings

        from transformers import MarianTokenizer

        try:
            with warnings.catch_warnings():
                # Moses punctuation normalisation is optional; without sacremoses the text goes
                # to SentencePiece as is. Not worth a warning on every load.
                warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
                return MarianTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            msg = str(exc).strip().strip("'\"").splitlines()
            why = msg[0][:300] if msg else type(exc).__name__
            raise CheckpointError(f"cannot load the Marian tokenizer in {path}: {why}") from None
    raise CheckpointError(f"{path} has no tokenizer (tokenizer.json or source.spm/target.spm)")


# -- the model --------------------------------------------------------------------------------

_PAIR_NAME = re.compile(r"(?:opus-mt|translator)-([a-z]{2,3})-([a-z]{2,3})$", re.I)
_WORD = re.compile(r"\S+\s*")


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Seq2Seq:
    """An encoder-decoder model and its tokenizer, ready to translate or summarize.

    Args:
        model: a transformers ``*ForConditionalGeneration`` model.
        tokenizer: its tokenizer.
        src, tgt: language codes (``None`` for a summarizer or an unknown pair).
        task: ``"translate"`` or ``"summarize"``.
        name: shown by the assistant (``Reply.data["model"]``).
        max_source_length: longer inputs are truncated to this many tokens.
        max_target_length: the output length the model was trained for (summary budget).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        src: str | None = None,
        tgt: str | None = None,
        task: str = "translate",
        name: str = "seq2seq",
        max_source_length: int = 256,
        max_target_length: int = 128,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.src, self.tgt, self.task, self.name = src, tgt, task, name
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self._lock = threading.Lock()

    @classmethod
    def from_dir(
        cls, path: str | Path, *, src: str | None = None, tgt: str | None = None
    ) -> Seq2Seq:
        """Load our checkpoint (a run dir with ``best/``, or one checkpoint) or a MarianMT dir.

        Weights load only from safetensors (pickle is refused); shapes that do not fit the
        config are a one-line :class:`CheckpointError`.
        """
        from lm._quiet import quiet_transformers

        quiet_transformers()
        path = resolve_model_dir(path)
        manifest = validate_dir(path)
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}/config.json is not valid JSON: {exc}") from None
        if not isinstance(cfg, dict) or not cfg.get("is_encoder_decoder", False):
            kind = cfg.get("model_type", "?") if isinstance(cfg, dict) else "?"
            raise CheckpointError(
                f"{path} holds a {kind} model, not an encoder-decoder (translation) model"
            )
        tokenizer = _load_tokenizer(path)
        model = _load_model(path)
        model.to(_device())
        if src is None and tgt is None:
            src, tgt = manifest.get("src"), manifest.get("tgt")
            if src is None and tgt is None:
                m = _PAIR_NAME.search(path.name) or _PAIR_NAME.search(path.parent.name)
                if m:
                    src, tgt = m.group(1).lower(), m.group(2).lower()
        shown = path.parent.name if path.name in {"best", "last"} else path.name
        max_pos = int(getattr(model.config, "max_position_embeddings", 512) or 512)
        return cls(
            model,
            tokenizer,
            src=src,
            tgt=tgt,
            task=str(manifest.get("task") or "translate"),
            name=str(manifest.get("name") or shown),
            max_source_length=int(manifest.get("max_source_length") or min(512, max_pos)),
            max_target_length=int(manifest.get("max_target_length") or 128),
        )

    def generate(
        self,
        texts: list[str],
        *,
        beam_size: int = 4,
        length_penalty: float = 1.0,
        max_new_tokens: int | None = None,
        batch_size: int = 32,
    ) -> list[str]:
        """Outputs for ``texts`` in order; batched by similar length. Empty input -> ``""``.

        Args:
            beam_size: 1 is greedy decoding.
            length_penalty: beam scores are divided by ``length ** length_penalty``; above 0
                favours longer outputs.
            max_new_tokens: default ``1.5 x`` the longest input in the batch plus 10 tokens.
        """
        import torch

        if beam_size < 1:
            raise LMError("beam size must be at least 1")
        outputs = [""] * len(texts)
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        if not todo:  # nothing to translate (and a MarianTokenizer rejects an empty batch)
            return outputs
        enc = self.tokenizer(
            [texts[i].strip() for i in todo],
            truncation=True,
            max_length=self.max_source_length,
        )["input_ids"]
        order = sorted(range(len(todo)), key=lambda k: len(enc[k]))
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        max_pos = int(getattr(self.model.config, "max_position_embeddings", 512) or 512)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                longest = max(len(enc[k]) for k in chunk)
                ids = torch.full((len(chunk), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), longest), dtype=torch.long)
                for row, k in enumerate(chunk):
                    ids[row, : len(enc[k])] = torch.tensor(enc[k])
                    mask[row, : len(enc[k])] = 1
                budget = max_new_tokens or int(1.5 * longest) + 10
                out = self.model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    num_beams=beam_size,
                    length_penalty=length_penalty,
                    max_new_tokens=min(budget, max_pos - 1),
                    do_sample=False,
                    early_stopping=True,
                )
                decoded = self.tokenizer.batch_decode(out, skip_special_tokens=True)
                for k, text in zip(chunk, decoded, strict=True):
                    outputs[todo[k]] = text.strip()
        return outputs

    def stream(self, text: str, **kw: Any) -> Iterator[str]:
        """Yield the output in word-sized pieces.

        Beam search only knows its best hypothesis at the end, so this decodes the whole text
        first and then yields it word by word; it is a streaming *interface*, not incremental.
        """
        out = self.generate([text], **kw)[0]
        yield from _WORD.findall(out)


def _load_model(path: Path) -> Any:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    try:
        model, info = AutoModelForSeq2SeqLM.from_pretrained(
            str(path),
            local_files_only=True,
            use_safetensors=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the model in {path}: {msg[:300]}") from None
    ignore = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or []]
    missing = [k for k in info.get("missing_keys", []) if not any(p.search(k) for p in ignore)]
    mismatched = info.get("mismatched_keys", [])
    if mismatched:
        key = mismatched[0][0] if isinstance(mismatched[0], tuple) else mismatched[0]
        raise CheckpointError(f"{path}: tensor {key} does not match the shape in config.json")
    if missing:
        raise CheckpointError(f"{path} is missing weights: {', '.join(sorted(missing)[:3])}")
    # Sinusoidal position tables are rebuilt on load with requires_grad=True; they are fixed
    # (a fresh model freezes them), and a resumed run must see the same trainable parameters.
    for module in model.modules():
        if "Sinusoidal" in type(module).__name__:
            for p in module.parameters():
                p.requires_grad_(False)
    return model


# -- summarizer -------------------------------------------------------------------------------


class AbstractiveSummarizer:
    """Summaries written by a locally trained seq2seq model (``llmos train summarizer``)."""

    def __init__(self, model: Seq2Seq, *, beam_size: int = 4, length_penalty: float = 1.0):
        self.model = model
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.max_tokens = model.max_target_length

    @property
    def name(self) -> str:
        return self.model.name

    def summarize(self, text: str, max_words: int | None = None) -> str:
        """One abstractive summary; ``max_words`` caps its length (cut at a word boundary)."""
        # ~2 BPE tokens per word; without a cap, the length the model was trained to write.
        budget = self.max_tokens if max_words is None else max(8, int(max_words * 2))
        out = self.model.generate(
            [text],
            beam_size=self.beam_size,
            length_penalty=self.length_penalty,
            max_new_tokens=budget,
        )[0]
        words = out.split()
        if max_words is not None and len(words) > max_words:
            out = " ".join(words[:max_words]).rstrip(",;:") + "…"
        return out

    def stream(self, text: str, max_words: int | None = None) -> Iterator[str]:
        """Word-sized pieces of :meth:`summarize` (computed whole first, see Seq2Seq.stream)."""
        yield from _WORD.findall(self.summarize(text, max_words))


def load_summarizer(path: str | Path) -> AbstractiveSummarizer:
    """The summarizer in ``path`` (a run dir from ``llmos train summarizer`` or a checkpoint)."""
    return AbstractiveSummarizer(Seq2Seq.from_dir(path))


# -- training ---------------------------------------------------------------------------------


@dataclass
class Seq2SeqTrainConfig:
    """Options of one seq2seq run; ``None`` means "the preset's default"."""

    task: str = "translate"  # or "summarize"
    src: str | None = None
    tgt: str | None = None
    preset: str = "small"
    steps: int | None = None
    epochs: float | None = None
    time_budget_s: float | None = None
    batch_tokens: int | None = None
    learning_rate: float | None = None
    warmup_steps: int | None = None
    schedule: str = "cosine"  # or "inverse_sqrt"
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    dropout: float | None = None
    vocab_size: int | None = None
    max_source_length: int | None = None  # default 128 tokens (translate) / 512 (summarize)
    max_target_length: int | None = None  # default 128 / 128
    eval_interval: int | None = None
    val_fraction: float = 0.05
    max_val_pairs: int = 1000
    seed: int = 1234
    threads: int | None = None  # torch CPU threads; None = all cores

    def validate(self) -> None:
        get_preset(self.preset)
        if self.task not in ("translate", "summarize"):
            raise LMError("task must be 'translate' or 'summarize'")
        if self.schedule not in ("cosine", "inverse_sqrt"):
            raise LMError("schedule must be 'cosine' or 'inverse_sqrt'")
        for name in ("steps", "epochs", "time_budget_s", "batch_tokens", "eval_interval"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise LMError(f"{name.replace('_', ' ')} must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise LMError("label smoothing must be in [0, 1)")
        if self.steps is None and self.epochs is None and self.time_budget_s is None:
            raise LMError("give a budget: --steps N, --epochs N or --time 20m")


@dataclass
class Seq2SeqTrainResult:
    out_dir: Path
    best_dir: Path
    last_dir: Path
    step: int
    epochs: float
    best_val_loss: float
    val_loss: float
    elapsed_s: float
    tokens_per_s: float
    parameters: int
    pairs: int
    val_pairs: int
    stats: dict[str, Any]
    history: dict[str, list[Any]]


@dataclass
class _Run:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0
    best_val_loss: float = math.inf
    train_curve: list[list[float]] = field(default_factory=list)
    val_curve: list[list[float]] = field(default_factory=list)


def _pairs_hash(pairs: list[Pair]) -> str:
    h = hashlib.sha256()
    for a, b in pairs:
        h.update(hashlib.sha256(f"{a}\t{b}".encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()[:16]


def _split(pairs: list[Pair], cfg: Seq2SeqTrainConfig) -> tuple[list[Pair], list[Pair]]:
    """Deterministic held-out slice (every k-th pair) when no validation pairs are given."""
    if len(pairs) < 4:
        return pairs, pairs[:1]
    n_val = min(cfg.max_val_pairs, max(1, round(len(pairs) * cfg.val_fraction)))
    stride = max(1, len(pairs) // n_val)
    val_idx = set(range(stride // 2, len(pairs), stride)[:n_val])
    return [p for i, p in enumerate(pairs) if i not in val_idx], [pairs[i] for i in sorted(val_idx)]


def _encode(tok: Any, pairs: list[Pair], max_src: int, max_tgt: int) -> list[tuple[list, list]]:
    src = tok([a for a, _ in pairs], truncation=True, max_length=max_src)["input_ids"]
    tgt = tok([b for _, b in pairs], truncation=True, max_length=max_tgt)["input_ids"]
    return list(zip(src, tgt, strict=True))


def _batches(data: list[tuple[list, list]], batch_tokens: int, seed: int | None) -> list[list[int]]:
    """Index batches of similar length whose padded size stays under ``batch_tokens``.

    Sorting by length (with a little noise when ``seed`` is given) keeps padding low; shuffling
    the batch order keeps the updates varied. Same seed, same batches: resume relies on it.
    """
    import random

    rng = random.Random(seed)
    noise = (lambda: rng.random()) if seed is not None else (lambda: 0.0)
    order = sorted(range(len(data)), key=lambda i: max(len(data[i][0]), len(data[i][1])) + noise())
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = max(len(data[i][0]), len(data[i][1]))
        if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    if seed is not None:
        rng.shuffle(out)
    return out


def _collate(data: list[tuple[list, list]], idx: list[int], pad: int) -> dict[str, Any]:
    import torch

    src = [data[i][0] for i in idx]
    tgt = [data[i][1] for i in idx]
    S, T = max(map(len, src)), max(map(len, tgt))
    ids = torch.full((len(idx), S), pad, dtype=torch.long)
    mask = torch.zeros((len(idx), S), dtype=torch.long)
    dec = torch.full((len(idx), T), pad, dtype=torch.long)  # pad is the decoder start token
    labels = torch.full((len(idx), T), -100, dtype=torch.long)
    for r, (s, t) in enumerate(zip(src, tgt, strict=True)):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
        labels[r, : len(t)] = torch.tensor(t)
        dec[r, 1 : len(t)] = torch.tensor(t[:-1])
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec, "labels": labels}


def _loss(model: Any, batch: dict[str, Any], device: Any, smoothing: float) -> tuple[Any, int]:
    import torch.nn.functional as F

    logits = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        decoder_input_ids=batch["decoder_input_ids"].to(device),
    ).logits
    labels = batch["labels"].to(device)
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, label_smoothing=smoothing
    )
    return loss, int((labels != -100).sum())


def _val_loss(model: Any, data: list, batches: list[list[int]], pad: int, device: Any) -> float:
    """Token-weighted cross-entropy (no label smoothing: a true NLL) over the validation set."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for idx in batches:
            loss, n = _loss(model, _collate(data, idx, pad), device, 0.0)
            total += loss.item() * n
            count += n
    model.train()
    return total / max(count, 1)


def build_model(preset: Seq2SeqPreset, tokenizer: Any, cfg: Seq2SeqTrainConfig) -> Any:
    """A randomly initialised ``MarianMTModel`` sized by ``preset`` for ``tokenizer``."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    drop = preset.dropout if cfg.dropout is None else cfg.dropout
    config = MarianConfig(
        vocab_size=len(tokenizer),
        d_model=preset.d_model,
        encoder_layers=preset.layers,
        decoder_layers=preset.layers,
        encoder_attention_heads=preset.heads,
        decoder_attention_heads=preset.heads,
        encoder_ffn_dim=preset.ffn,
        decoder_ffn_dim=preset.ffn,
        max_position_embeddings=512,
        dropout=drop,
        attention_dropout=drop,
        activation_dropout=0.0,
        activation_function="relu",
        scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        bad_words_ids=[[tokenizer.pad_token_id]],
        num_beams=4,
        max_length=512,
    )
    return model


def train_seq2seq(
    pairs: list[Pair],
    out_dir: str | Path,
    config: Seq2SeqTrainConfig,
    *,
    val_pairs: list[Pair] | None = None,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    show_progress: bool = True,
    stats: PairStats | None = None,
) -> Seq2SeqTrainResult:
    """Train (or resume) a seq2seq model on in-memory pairs; checkpoints go to ``out_dir``.

    Args:
        pairs: (source, target) training pairs, already read and filtered.
        out_dir: run directory; receives ``best/``, ``last/`` and ``loss_curve.png``.
        config: task, languages, preset and budget.
        val_pairs: held-out pairs for validation loss (default: a 5% slice of ``pairs``).
        resume: continue from ``out_dir/last`` on the same pairs and the same batch order.
        on_progress: ``on_progress(done, total, info)`` after every step (steps or seconds).
    """
    import torch
    from tqdm import tqdm

    from lm._quiet import quiet_transformers

    quiet_transformers()
    cfg = config
    out = Path(out_dir).expanduser()
    last_dir, best_dir = out / "last", out / "best"
    if val_pairs is None:
        pairs, val_pairs = _split(pairs, cfg)
    data_id = _pairs_hash([*pairs, ("", ""), *val_pairs])
    run = _Run()
    opt_state = rng_state = None
    if resume:
        if not is_complete(last_dir):
            raise CheckpointError(f"nothing to resume: {last_dir} holds no complete checkpoint")
        loaded = Seq2Seq.from_dir(last_dir)
        model, tokenizer = loaded.model, loaded.tokenizer
        state, opt_state, rng_state = load_training_state(last_dir)
        saved = dict(state["config"])
        for key in ("steps", "epochs", "time_budget_s"):  # the budget may grow on resume
            if getattr(cfg, key) is not None:
                saved[key] = getattr(cfg, key)
        cfg = Seq2SeqTrainConfig(**saved)
        if state.get("data") != data_id:
            raise LMError("the pairs changed since this run started; resume needs the same --pairs")
        run = _Run(**state["run"])
    cfg.validate()
    preset = get_preset(cfg.preset)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    summarize = cfg.task == "summarize"
    max_src = cfg.max_source_length or (512 if summarize else 128)
    max_tgt = cfg.max_target_length or 128
    if not resume:
        texts = [t for p in pairs for t in p]
        tokenizer = train_shared_bpe(texts, cfg.vocab_size or preset.vocab_size, max_src)
        model = build_model(preset, tokenizer, cfg)
    device = _device()
    model.to(device)
    model.train()
    pad = tokenizer.pad_token_id
    data = _encode(tokenizer, pairs, max_src, max_tgt)
    val_data = _encode(tokenizer, val_pairs, max_src, max_tgt)
    batch_tokens = cfg.batch_tokens or preset.batch_tokens
    val_batches = _batches(val_data, batch_tokens * 2, None)
    per_epoch = len(_batches(data, batch_tokens, cfg.seed))
    base_lr = cfg.learning_rate or preset.learning_rate
    warmup = preset.warmup_steps if cfg.warmup_steps is None else cfg.warmup_steps
    eval_every = cfg.eval_interval or preset.eval_interval
    optimizer = make_optimizer(
        list(model.parameters()), "adamw", base_lr, cfg.weight_decay, betas=(0.9, 0.98)
    )
    restore_optimizer(optimizer, opt_state, last_dir)
    if rng_state:
        torch.set_rng_state(rng_state["torch"])
    n_params = sum(p.numel() for p in model.parameters())
    kind = "summarizer" if summarize else "translator"

    def save(dst: Path, with_state: bool, val_loss: float) -> None:
        def fill(tmp: Path) -> None:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            if with_state:
                state = {"config": asdict(cfg), "run": asdict(run), "data": data_id}
                save_training_state(tmp, optimizer, state, {"torch": torch.get_rng_state()})

        manifest = {
            "kind": kind,
            "task": cfg.task,
            "src": cfg.src,
            "tgt": cfg.tgt,
            "name": out.name,
            "preset": cfg.preset,
            "parameters": n_params,
            "step": run.step,
            "epochs": round(run.step / max(per_epoch, 1), 3),
            "eval_loss": val_loss,
            "max_source_length": max_src,
            "max_target_length": max_tgt,
            "train_pairs": len(pairs),
        }
        write_checkpoint_dir(dst, fill, manifest)

    def progress() -> float:
        fracs = []
        if cfg.steps:
            fracs.append(run.step / cfg.steps)
        if cfg.epochs:
            fracs.append(run.step / (cfg.epochs * per_epoch))
        if cfg.time_budget_s:
            fracs.append(run.elapsed_s / cfg.time_budget_s)
        return max(fracs)

    def lr_now() -> float:
        s = run.step + 1
        if cfg.schedule == "inverse_sqrt":
            return base_lr * min(s / max(warmup, 1), math.sqrt(max(warmup, 1) / s))
        # Warmup ends after `warmup` steps or a quarter of the budget, whichever comes first:
        # a very short run still gets to train at full rate. The cap must stay generous: this
        # post-norm model collapses into a source-blind language model when the ramp is only
        # a hundred or two steps long (Multi30k at 1e-3 with a 130-step ramp: val loss stuck
        # at 3.5 and BLEU 2; with 400 steps: 1.71 and BLEU 38).
        ramp = max(s / max(warmup, 1), progress() / WARMUP_FRACTION)
        if ramp < 1.0:
            return base_lr * ramp
        return lr_at(progress(), run.step, base_lr, 0, cfg.min_lr_ratio)

    by_time = cfg.time_budget_s is not None and cfg.steps is None and cfg.epochs is None
    total = round(cfg.time_budget_s or 0) if by_time else math.ceil(progress_total(cfg, per_epoch))
    bar = tqdm(
        total=total,
        initial=min(total, int(run.elapsed_s) if by_time else run.step),
        unit="s" if by_time else "step",
        disable=not show_progress,
        desc=f"train {kind}",
        dynamic_ncols=True,
    )
    val_loss = run.val_curve[-1][1] if run.val_curve else math.inf
    epoch_batches = _batches(data, batch_tokens, cfg.seed + run.epoch)
    rate_t, rate_tok, tps = time.perf_counter(), 0, 0.0
    try:
        while progress() < 1.0:
            t0 = time.perf_counter()
            if run.batch_in_epoch >= len(epoch_batches):
                run.epoch += 1
                run.batch_in_epoch = 0
                epoch_batches = _batches(data, batch_tokens, cfg.seed + run.epoch)
            idx = epoch_batches[run.batch_in_epoch]
            lr = lr_now()
            set_lr(optimizer, lr)
            loss, n_tok = _loss(model, _collate(data, idx, pad), device, cfg.label_smoothing)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_v = loss.item()
            if not math.isfinite(loss_v):
                raise LMError(f"training diverged at step {run.step} (loss {loss_v}); lower --lr")
            run.step += 1
            run.batch_in_epoch += 1
            run.tokens += n_tok
            run.train_curve.append([run.step, round(loss_v, 5)])
            run.elapsed_s += time.perf_counter() - t0
            rate_tok += n_tok
            now = time.perf_counter()
            if now - rate_t > 2.0 or tps == 0.0:
                tps, rate_t, rate_tok = rate_tok / max(now - rate_t, 1e-9), now, 0
            done = progress() >= 1.0
            if run.step % eval_every == 0 or done:
                t_eval = time.perf_counter()
                val_loss = _val_loss(model, val_data, val_batches, pad, device)
                run.val_curve.append([run.step, round(val_loss, 5)])
                if val_loss < run.best_val_loss:
                    run.best_val_loss = val_loss
                    save(best_dir, False, val_loss)
                save(last_dir, True, val_loss)
                run.elapsed_s += time.perf_counter() - t_eval
            bar.n = min(total, int(run.elapsed_s) if by_time else run.step)
            bar.set_postfix(
                loss=f"{loss_v:.3f}",
                val=f"{val_loss:.3f}",
                ep=f"{run.step / per_epoch:.2f}",
                tok_s=f"{tps:,.0f}",
                refresh=False,
            )
            bar.refresh()
            if on_progress:
                on_progress(
                    bar.n,
                    total,
                    {
                        "step": run.step,
                        "epoch": run.step / per_epoch,
                        "loss": loss_v,
                        "val_loss": val_loss,
                        "lr": lr,
                        "tokens_per_s": tps,
                        "elapsed_s": run.elapsed_s,
                    },
                )
    except KeyboardInterrupt:
        if run.step > 0:
            save(last_dir, True, val_loss)
        raise LMError(f"training interrupted at step {run.step}; continue with --resume") from None
    finally:
        bar.close()
        if run.train_curve:
            _write_curve(out, run, kind)
    return Seq2SeqTrainResult(
        out_dir=out,
        best_dir=best_dir,
        last_dir=last_dir,
        step=run.step,
        epochs=run.step / max(per_epoch, 1),
        best_val_loss=run.best_val_loss,
        val_loss=val_loss,
        elapsed_s=run.elapsed_s,
        tokens_per_s=run.tokens / max(run.elapsed_s, 1e-9),
        parameters=n_params,
        pairs=len(pairs),
        val_pairs=len(val_pairs),
        stats=asdict(stats) if stats else {},
        history={"train": run.train_curve, "val": run.val_curve},
    )


def progress_total(cfg: Seq2SeqTrainConfig, per_epoch: int) -> float:
    """Optimizer steps a step/epoch-budgeted run makes (the smaller budget wins)."""
    totals = []
    if cfg.steps:
        totals.append(float(cfg.steps))
    if cfg.epochs:
        totals.append(cfg.epochs * per_epoch)
    return min(totals) if totals else 0.0


def _write_curve(out: Path, run: _Run, kind: str) -> None:
    from lm.plot import plot_loss_curve

    k = max(1, len(run.train_curve) // 200)  # running mean: per-step loss is noisy
    smooth = [
        (
            int(run.train_curve[i][0]),
            sum(v for _, v in run.train_curve[max(0, i - k + 1) : i + 1]) / min(k, i + 1),
        )
        for i in range(len(run.train_curve))
    ]
    plot_loss_curve(
        out / "loss_curve.png",
        smooth,
        [(int(s), v) for s, v in run.val_curve],
        title=f"{kind}: train (label-smoothed) and validation NLL",
    )


def train_from_files(
    pair_files: list[Path],
    out: Path,
    cfg: Seq2SeqTrainConfig,
    *,
    val_files: list[Path] | None = None,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    show_progress: bool = True,
) -> Seq2SeqTrainResult:
    """Read, clean and train: what ``llmos train translator/summarizer`` run."""
    raw = read_pairs(pair_files, cfg.src, cfg.tgt, task=cfg.task)
    summarize = cfg.task == "summarize"
    pairs, stats = filter_pairs(
        raw, max_chars=20_000 if summarize else 1000, max_ratio=0.0 if summarize else 9.0
    )
    val = None
    if val_files:
        val = read_pairs(val_files, cfg.src, cfg.tgt, task=cfg.task)
    return train_seq2seq(
        pairs,
        out,
        cfg,
        val_pairs=val,
        resume=resume,
        on_progress=on_progress,
        show_progress=show_progress,
        stats=stats,
    )


def train_summarizer(
    pairs: list[Path],
    out: Path,
    *,
    preset: str = "small",
    time_budget_s: float | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    seed: int = 1234,
    show_progress: bool = True,
    **overrides: Any,
) -> Seq2SeqTrainResult:
    """Train an abstractive summarizer on document/summary pairs (JSONL, CSV or TSV).

    ``overrides`` are :class:`Seq2SeqTrainConfig` fields (``batch_tokens``, ``vocab_size`` ...).
    """
    cfg = Seq2SeqTrainConfig(
        task="summarize",
        preset=preset,
        steps=steps,
        epochs=epochs,
        time_budget_s=time_budget_s,
        seed=seed,
        **overrides,
    )
    return train_from_files(
        list(pairs),
        Path(out),
        cfg,
        resume=resume,
        on_progress=on_progress,
        show_progress=show_progress,
    )
