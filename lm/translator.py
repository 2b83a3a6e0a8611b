"""Translation on top of :mod:`lm.seq2seq`: the per-project set of models, training, evaluation.

A project keeps one directory per language pair, ``models/translator-<src>-<tgt>/`` (a run dir
from ``llmos train translator``, or a MarianMT directory the user downloaded and renamed).
:class:`TranslatorSet` finds them and loads each on first use; the translate skill reads it
through ``services.translator`` (``supports`` / ``stream`` / ``name``).

Scores come from sacrebleu: BLEU and chrF on detokenized cased text (the comparable figure),
plus lower-cased BLEU with sacrebleu's ``13a`` tokenizer, closest to the lower-cased
tokenized BLEU that papers report on Multi30k.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm.checkpoint import write_json_atomic
from lm.errors import CheckpointError, LMError
from lm.seq2seq import ProgressFn, Seq2Seq, Seq2SeqTrainConfig, Seq2SeqTrainResult, train_from_files
from lm.seq2seq_data import Pair, read_pairs

__all__ = [
    "Seq2SeqTrainResult",
    "TranslatorSet",
    "evaluate_translation",
    "train_translator",
    "write_translation_report",
]

# ours ("translator-en-de") or a hub download kept under its name ("opus-mt-en-de")
_DIR = re.compile(r"^(?:translator|opus-mt)-([a-z]{2,3})-([a-z]{2,3})$", re.I)


class TranslatorSet:
    """Every ``models_dir/translator-<src>-<tgt>/`` model, each loaded lazily, thread-safely.

    Args:
        models_dir: the project's models directory (``Project.models_dir``).
        beam_size, length_penalty: decoding settings for :meth:`stream` and :meth:`translate`.
    """

    def __init__(self, models_dir: Path, *, beam_size: int = 4, length_penalty: float = 1.0):
        self.models_dir = Path(models_dir)
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self._models: dict[tuple[str, str], Seq2Seq] = {}
        self._lock = threading.Lock()

    def _dirs(self) -> dict[tuple[str, str], Path]:
        found: dict[tuple[str, str], Path] = {}
        if not self.models_dir.is_dir():
            return found
        for d in sorted(self.models_dir.iterdir()):
            m = _DIR.match(d.name)
            if m and d.is_dir():
                found[(m.group(1).lower(), m.group(2).lower())] = d
        return found

    def pairs(self) -> list[tuple[str, str]]:
        """The (src, tgt) language pairs that have a model directory."""
        return sorted(self._dirs())

    def supports(self, src: str, tgt: str) -> bool:
        return (src.lower(), tgt.lower()) in self._dirs()

    def name(self, src: str, tgt: str) -> str:
        key = (src.lower(), tgt.lower())
        if key in self._models:
            return self._models[key].name
        d = self._dirs().get(key)
        if d is None:
            raise LMError(f"no {src}->{tgt} translation model under {self.models_dir}")
        return d.name

    def model(self, src: str, tgt: str) -> Seq2Seq:
        """The loaded model for the pair (loaded once, on first use)."""
        key = (src.lower(), tgt.lower())
        with self._lock:
            if key not in self._models:
                d = self._dirs().get(key)
                if d is None:
                    raise LMError(
                        f"no {src}->{tgt} translation model under {self.models_dir}; train one "
                        f"with: llmos train translator --pairs PAIRS.tsv --src {src} --tgt {tgt}"
                    )
                self._models[key] = Seq2Seq.from_dir(d, src=key[0], tgt=key[1])
            return self._models[key]

    def translate(
        self, texts: list[str], src: str, tgt: str, beam_size: int | None = None
    ) -> list[str]:
        return self.model(src, tgt).generate(
            texts, beam_size=beam_size or self.beam_size, length_penalty=self.length_penalty
        )

    def stream(self, text: str, src: str, tgt: str) -> Iterator[str]:
        """Word-sized pieces of the beam-search translation (decoded whole first)."""
        yield from self.model(src, tgt).stream(
            text, beam_size=self.beam_size, length_penalty=self.length_penalty
        )


def train_translator(
    pairs: list[Path],
    src: str,
    tgt: str,
    out: Path,
    *,
    preset: str = "small",
    time_budget_s: float | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    seed: int = 1234,
    val: list[Path] | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> Seq2SeqTrainResult:
    """Train a ``src``->``tgt`` translator on pair files (TSV, parallel files, CSV, JSONL).

    Args:
        pairs: pair files; parallel corpora as ``train.en train.de`` or the prefix ``train``.
        out: run directory (``best/``, ``last/``, ``loss_curve.png``).
        val: held-out pair files for validation (default: a 5% slice of ``pairs``).
        on_progress: ``on_progress(done, total, info)`` after every step, as in lm.train.
        overrides: other :class:`~lm.seq2seq.Seq2SeqTrainConfig` fields.
    """
    if not src or not tgt or src.lower() == tgt.lower():
        raise LMError("give two different languages: --src en --tgt de")
    if steps is None and epochs is None and time_budget_s is None and not resume:
        raise LMError("give a budget: --steps N, --epochs N or --time 20m")
    cfg = Seq2SeqTrainConfig(
        task="translate",
        src=src.lower(),
        tgt=tgt.lower(),
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
        val_files=val,
        resume=resume,
        on_progress=on_progress,
        show_progress=show_progress,
    )


def _bleu_chrf(hyps: list[str], refs: list[str]) -> dict[str, float]:
    import sacrebleu

    return {
        "bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
        "bleu_lc_13a": round(
            sacrebleu.corpus_bleu(hyps, [refs], lowercase=True, tokenize="13a").score, 2
        ),
    }


def evaluate_translation(
    model_or_set: Seq2Seq | TranslatorSet,
    pairs: list[Pair] | list[Path],
    *,
    src: str | None = None,
    tgt: str | None = None,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    samples: int = 5,
) -> dict[str, Any]:
    """Translate the sources of ``pairs`` and score them against the references.

    Returns BLEU and chrF (sacrebleu, detokenized cased), ``bleu_lc_13a`` (lower-cased, 13a
    tokenized), sentences/s, and a few sample translations.
    """
    if pairs and isinstance(pairs[0], str | Path):
        pairs = read_pairs([Path(p) for p in pairs], src, tgt)  # type: ignore[arg-type]
    pairs = [p for p in pairs if isinstance(p, tuple)]
    if not pairs:
        raise LMError("no pairs to evaluate on")
    if isinstance(model_or_set, TranslatorSet):
        if not src or not tgt:
            raise LMError("say which pair to evaluate: --src and --tgt")
        model = model_or_set.model(src, tgt)
    else:
        model = model_or_set
    sources, refs = [a for a, _ in pairs], [b for _, b in pairs]
    t0 = time.perf_counter()
    hyps = model.generate(sources, beam_size=beam_size, length_penalty=length_penalty)
    elapsed = time.perf_counter() - t0
    scores = _bleu_chrf(hyps, refs)
    return {
        "model": model.name,
        "src": src or model.src,
        "tgt": tgt or model.tgt,
        "sentences": len(pairs),
        "beam_size": beam_size,
        "length_penalty": length_penalty,
        **scores,
        "seconds": round(elapsed, 2),
        "sentences_per_s": round(len(pairs) / max(elapsed, 1e-9), 2),
        "samples": [
            {"source": s, "reference": r, "output": h}
            for s, r, h in list(zip(sources, refs, hyps, strict=True))[:samples]
        ],
        "outputs": hyps,
    }


def write_translation_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``translate_eval.md`` and ``translate_eval.json`` in ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LMError(f"cannot write the report to {out_dir}: {exc}") from None
    js = out_dir / "translate_eval.json"
    md = out_dir / "translate_eval.md"
    write_json_atomic(js, result)
    lines = [
        f"# Translation evaluation: {result['model']} ({result['src']} -> {result['tgt']})",
        "",
        f"{result['sentences']} sentences, beam {result['beam_size']}, "
        f"length penalty {result['length_penalty']}, {result['sentences_per_s']} sentences/s.",
        "",
        "| metric | score |",
        "|---|---|",
        f"| BLEU (sacrebleu, detokenized, cased) | {result['bleu']} |",
        f"| chrF (sacrebleu) | {result['chrf']} |",
        f"| BLEU (lower-cased, 13a tokenized) | {result['bleu_lc_13a']} |",
        "",
        "## Samples",
        "",
    ]
    for s in result["samples"]:
        lines += [f"- source: {s['source']}", f"  - reference: {s['reference']}"]
        lines += [f"  - output: {s['output']}"]
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(md)
    return md, js


def load_translator(path: Path, src: str | None = None, tgt: str | None = None) -> Seq2Seq:
    """One translation model from a directory (ours or MarianMT); checks it is a translator."""
    model = Seq2Seq.from_dir(path, src=src, tgt=tgt)
    if model.task != "translate":
        raise CheckpointError(f"{path} holds a {model.task} model, not a translator")
    return model
