"""CLI for the local language model: ``llmos train lm``, ``llmos finetune``, ``llmos models``,
``llmos eval lm``. Heavy imports (torch, transformers) happen inside the commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from assistant.errors import LlmosError

PROJECT_HELP = "Bot project directory (default: current dir or the demo)."


class LMCommandError(LlmosError):
    """A language-model error (``lm.errors.LMError``) surfaced through the CLI."""


@contextmanager
def _lm_errors() -> Iterator[None]:
    from lm.errors import LMError

    try:
        yield
    except LMError as exc:
        raise LMCommandError(str(exc)) from None


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    @train_app.command("lm")
    def train_lm_cmd(
        corpus: list[Path] = typer.Option(
            ..., "--corpus", help="Text file or directory (repeatable)."
        ),
        preset: str = typer.Option("small", "--preset", help="tiny | small | base"),
        time: str | None = typer.Option(
            None, "--time", help="Wall-clock budget, e.g. 20m, 90s, 1h."
        ),
        steps: int | None = typer.Option(None, "--steps", help="Number of optimizer steps."),
        out: Path | None = typer.Option(
            None, "--out", help="Run directory (default: <project>/models/lm)."
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last."),
        optimizer: str = typer.Option(
            "adamw", "--optimizer", help="adamw | adam | sgd | adagrad | rmsprop"
        ),
        lr: float | None = typer.Option(
            None, "--lr", help="Peak learning rate (default: preset's)."
        ),
        warmup: int | None = typer.Option(
            None, "--warmup", help="Warmup steps before the cosine decay (default: preset's)."
        ),
        batch_size: int | None = typer.Option(None, "--batch-size"),
        block_size: int | None = typer.Option(None, "--block-size", help="Context length."),
        grad_accum: int = typer.Option(1, "--grad-accum"),
        micro_batch: int | None = typer.Option(
            None,
            "--micro-batch",
            help="Rows per forward/backward pass (default: 2,048 tokens on a CPU, all on a GPU).",
        ),
        grad_clip: float = typer.Option(1.0, "--grad-clip", help="0 disables clipping."),
        eval_interval: int = typer.Option(100, "--eval-interval"),
        tokenizer: str = typer.Option("bpe", "--tokenizer", help="bpe | char"),
        vocab_size: int | None = typer.Option(None, "--vocab-size"),
        seed: int = typer.Option(1337, "--seed"),
        dtype: str = typer.Option("auto", "--dtype", help="auto | fp32 | bf16"),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile (slow first step)."),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """Pretrain a language model on a text corpus (BPE tokenizer trained on it)."""
        from assistant.project import resolve_project

        proj = resolve_project(project)
        with _lm_errors():
            from lm.optim import parse_duration
            from lm.train import TrainConfig, train_lm

            budget = parse_duration(time) if time else None
            if budget is None and steps is None and not resume:
                budget = parse_duration("20m")
            cfg = TrainConfig(
                preset=preset,
                steps=steps,
                time_budget_s=budget,
                optimizer=optimizer,
                learning_rate=lr,
                warmup_steps=warmup,
                batch_size=batch_size,
                block_size=block_size,
                grad_accum=grad_accum,
                micro_batch=micro_batch,
                grad_clip=grad_clip,
                eval_interval=eval_interval,
                tokenizer=tokenizer,
                vocab_size=vocab_size,
                seed=seed,
                dtype=dtype,
                compile=compile_,
            )
            run_dir = out or proj.model_dir("lm")
            result = train_lm([str(c) for c in corpus], run_dir, cfg, resume=resume)
        typer.echo(
            f"trained {result.parameters:,} parameters for {result.step} steps "
            f"({result.elapsed_s:.0f}s, {result.tokens_per_s:,.0f} tokens/s, {result.dtype})"
        )
        typer.echo(f"validation loss {result.val_loss:.4f} (best {result.best_val_loss:.4f})")
        typer.echo(
            f"saved: {result.best_dir} (best), {result.last_dir} (last), {result.out_dir / 'loss_curve.png'}"
        )

    @app.command("finetune")
    def finetune_cmd(
        data: Path = typer.Option(
            ..., "--data", help='Chat JSONL: {"messages": [{"role","content"}...]}'
        ),
        base: Path | None = typer.Option(None, "--base", help="Model directory to start from."),
        lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters only."),
        merge: bool = typer.Option(False, "--merge", help="Merge the LoRA adapter into the base."),
        resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last."),
        steps: int | None = typer.Option(None, "--steps"),
        epochs: float = typer.Option(3.0, "--epochs"),
        lr: float | None = typer.Option(None, "--lr"),
        batch_size: int = typer.Option(8, "--batch-size"),
        dtype: str = typer.Option("auto", "--dtype", help="auto | fp32 | bf16"),
        out: Path | None = typer.Option(
            None, "--out", help="Run directory (default: <project>/models/lm-chat)."
        ),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """Fine-tune a causal LM on chat data (loss on assistant replies only), full or LoRA."""
        from assistant.project import resolve_project

        proj = resolve_project(project)
        with _lm_errors():
            from lm.finetune import FinetuneConfig, finetune

            if base is None and not resume:
                base = proj.model_dir("lm")
            cfg = FinetuneConfig(
                steps=steps, epochs=epochs, learning_rate=lr, batch_size=batch_size, dtype=dtype
            )
            run_dir = out or proj.model_dir("lm-chat")
            r = finetune(base, data, run_dir, cfg, lora=lora, merge=merge, resume=resume)
        typer.echo(
            f"fine-tuned {r.trainable_parameters:,} trainable parameters for {r.step} steps "
            f"({r.dtype})"
        )
        typer.echo(f"validation loss {r.val_loss:.4f} (best {r.best_val_loss:.4f})")
        typer.echo(
            f"saved: {r.best_dir} (best), {r.last_dir} (last)"
            + (f", {r.merged_dir} (merged)" if r.merged_dir else "")
        )

    @app.command("models")
    def models_cmd(
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """List the project's local models: directory, kind, parameters, size, eval loss."""
        from assistant.project import resolve_project
        from lm.inventory import list_models

        proj = resolve_project(project)
        rows = list_models(proj.models_dir)
        if not rows:
            typer.echo(
                f"no models under {proj.models_dir}; train one with: llmos train lm --corpus FILE"
            )
            return
        typer.echo(f"{'directory':<50} {'kind':<8} {'params':>12} {'size':>10} {'eval loss':>9}")
        for r in rows:
            params = f"{r['parameters']:,}" if r["parameters"] else "?"
            loss = f"{r['eval_loss']:.4f}" if isinstance(r["eval_loss"], int | float) else "-"
            size = f"{r['size_bytes'] / 1e6:.1f} MB"
            try:
                shown = str(Path(r["dir"]).relative_to(proj.models_dir))
            except ValueError:
                shown = r["dir"]
            typer.echo(f"{shown:<50} {r['kind']:<8} {params:>12} {size:>10} {loss:>9}")

    @eval_app.command("lm")
    def eval_lm_cmd(
        data: Path = typer.Option(..., "--data", help="Held-out text file (or chat JSONL)."),
        model: Path | None = typer.Option(
            None, "--model", help="Model dir (default: <project>/models/lm)."
        ),
        max_tokens: int | None = typer.Option(
            None, "--max-tokens", help="Score only the first N tokens."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Report directory (default: <project>/reports)."
        ),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """Loss, perplexity and tokens/s of a language model on held-out text."""
        from assistant.project import resolve_project

        proj = resolve_project(project)
        with _lm_errors():
            from lm.evaluate import evaluate_lm, write_report

            result = evaluate_lm(model or proj.model_dir("lm"), data, max_tokens=max_tokens)
            md, js = write_report(result, out or proj.state / "reports")
        typer.echo(
            f"loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
            f"({result['tokens']:,} tokens, {result['tokens_per_s']:,.0f} tokens/s)"
        )
        typer.echo(f"report: {md} and {js}")
