"""CLI for the seq2seq models: ``llmos train translator``, ``llmos train summarizer``,
``llmos eval translate``. Heavy imports (torch, transformers) happen inside the commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from assistant.commands.lm_cmds import PROJECT_HELP, LMCommandError

BUDGET_HELP = "Wall-clock budget, e.g. 20m, 90s, 1h (default 20m when no budget is given)."


@contextmanager
def _lm_errors() -> Iterator[None]:
    from lm.errors import LMError

    try:
        yield
    except LMError as exc:
        raise LMCommandError(str(exc)) from None


def _budget(
    time: str | None, steps: int | None, epochs: float | None, resume: bool
) -> float | None:
    from lm.optim import parse_duration

    if time:
        return parse_duration(time)
    if steps is None and epochs is None and not resume:
        return parse_duration("20m")
    return None


def _report(r: Any, kind: str) -> None:
    """Print a Seq2SeqTrainResult in three lines."""
    typer.echo(
        f"trained a {kind} of {r.parameters:,} parameters on {r.pairs:,} pairs "
        f"for {r.step} steps ({r.epochs:.2f} epochs, {r.elapsed_s:.0f}s)"
    )
    typer.echo(f"validation loss {r.val_loss:.4f} (best {r.best_val_loss:.4f})")
    typer.echo(f"saved: {r.best_dir} (best), {r.last_dir} (last), {r.out_dir / 'loss_curve.png'}")


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    @train_app.command("translator")
    def train_translator_cmd(
        pairs: list[Path] = typer.Option(
            ...,
            "--pairs",
            help="TSV pairs, or parallel files (train.en train.de, or the prefix train); repeatable.",
        ),
        src: str = typer.Option(..., "--src", help="Source language code, e.g. en."),
        tgt: str = typer.Option(..., "--tgt", help="Target language code, e.g. de."),
        preset: str = typer.Option("small", "--preset", help="tiny | small | base"),
        time: str | None = typer.Option(None, "--time", help=BUDGET_HELP),
        steps: int | None = typer.Option(None, "--steps", help="Number of optimizer steps."),
        epochs: float | None = typer.Option(None, "--epochs", help="Passes over the pairs."),
        val: list[Path] | None = typer.Option(
            None, "--val", help="Held-out pairs for validation (default: 5% of --pairs)."
        ),
        lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
        batch_tokens: int | None = typer.Option(None, "--batch-tokens"),
        vocab_size: int | None = typer.Option(None, "--vocab-size"),
        eval_interval: int | None = typer.Option(None, "--eval-interval"),
        seed: int = typer.Option(1234, "--seed"),
        out: Path | None = typer.Option(
            None, "--out", help="Run directory (default: <project>/models/translator-<src>-<tgt>)."
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last."),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """Train a translation model (encoder-decoder transformer, shared BPE) on sentence pairs."""
        from assistant.project import resolve_project

        proj = resolve_project(project)
        with _lm_errors():
            from lm.translator import train_translator

            run_dir = out or proj.model_dir(f"translator-{src.lower()}-{tgt.lower()}")
            result = train_translator(
                pairs,
                src,
                tgt,
                run_dir,
                preset=preset,
                time_budget_s=_budget(time, steps, epochs, resume),
                steps=steps,
                epochs=epochs,
                resume=resume,
                seed=seed,
                val=val or None,
                learning_rate=lr,
                batch_tokens=batch_tokens,
                vocab_size=vocab_size,
                eval_interval=eval_interval,
            )
        _report(result, f"{src}->{tgt} translator")

    @train_app.command("summarizer")
    def train_summarizer_cmd(
        pairs: list[Path] = typer.Option(
            ...,
            "--pairs",
            help="Document/summary pairs: JSONL, CSV (id,dialogue,summary) or TSV; repeatable.",
        ),
        preset: str = typer.Option("small", "--preset", help="tiny | small | base"),
        time: str | None = typer.Option(None, "--time", help=BUDGET_HELP),
        steps: int | None = typer.Option(None, "--steps"),
        epochs: float | None = typer.Option(None, "--epochs"),
        lr: float | None = typer.Option(None, "--lr"),
        batch_tokens: int | None = typer.Option(None, "--batch-tokens"),
        vocab_size: int | None = typer.Option(None, "--vocab-size"),
        eval_interval: int | None = typer.Option(None, "--eval-interval"),
        seed: int = typer.Option(1234, "--seed"),
        out: Path | None = typer.Option(
            None, "--out", help="Run directory (default: <project>/models/summarizer)."
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last."),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """Train an abstractive summarizer (encoder-decoder transformer) on summary pairs."""
        from assistant.project import resolve_project

        proj = resolve_project(project)
        with _lm_errors():
            from lm.seq2seq import train_summarizer

            result = train_summarizer(
                pairs,
                out or proj.model_dir("summarizer"),
                preset=preset,
                time_budget_s=_budget(time, steps, epochs, resume),
                steps=steps,
                epochs=epochs,
                resume=resume,
                seed=seed,
                learning_rate=lr,
                batch_tokens=batch_tokens,
                vocab_size=vocab_size,
                eval_interval=eval_interval,
            )
        _report(result, "summarizer")

    @eval_app.command("translate")
    def eval_translate_cmd(
        data: list[Path] = typer.Option(
            ..., "--data", help="Held-out pairs: TSV, or parallel files / prefix."
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Model dir (default: <project>/models/translator-<src>-<tgt>)."
        ),
        src: str | None = typer.Option(None, "--src", help="Source language (default: model's)."),
        tgt: str | None = typer.Option(None, "--tgt", help="Target language (default: model's)."),
        beam: int = typer.Option(4, "--beam", help="Beam size (1 = greedy)."),
        length_penalty: float = typer.Option(1.0, "--length-penalty"),
        out: Path | None = typer.Option(
            None, "--out", help="Report directory (default: <project>/reports)."
        ),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """BLEU and chrF (sacrebleu) of a translation model on held-out pairs."""
        from assistant.project import resolve_project

        proj = resolve_project(project)
        with _lm_errors():
            from lm.errors import LMError
            from lm.translator import TranslatorSet, evaluate_translation, load_translator
            from lm.translator import write_translation_report as write

            if model is not None:
                translator = load_translator(model, src=src, tgt=tgt)
            else:
                tset = TranslatorSet(proj.models_dir)
                if not (src and tgt):
                    found = tset.pairs()
                    if len(found) != 1:
                        have = ", ".join(f"{a}->{b}" for a, b in found) or "none"
                        raise LMError(
                            f"say which model to evaluate with --src/--tgt or --model "
                            f"(translation models in {proj.models_dir}: {have})"
                        )
                    src, tgt = found[0]
                translator = tset.model(src, tgt)
            src, tgt = src or translator.src, tgt or translator.tgt
            if not (src and tgt):
                raise LMError("the model does not name its languages; pass --src and --tgt")
            result = evaluate_translation(
                translator, data, src=src, tgt=tgt, beam_size=beam, length_penalty=length_penalty
            )
            md, js = write(result, out or proj.state / "reports")
        typer.echo(
            f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  "
            f"(lower-cased 13a BLEU {result['bleu_lc_13a']:.2f}; {result['sentences']} sentences, "
            f"beam {beam}, {result['sentences_per_s']:.1f} sentences/s)"
        )
        typer.echo(f"report: {md} and {js}")
