"""CLI for graph question answering: ``llmos train gnn`` and ``llmos eval kgqa``.

The graph is the project's (``<state>/data/knowledge/graph.json``, written by ``llmos ingest``)
unless ``--kb FILE`` names a triples file (``subject<TAB>relation<TAB>object`` or ``a|b|c``).
Heavy imports (torch, the embedder) happen inside the commands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from assistant.errors import LlmosError

PROJECT_HELP = "Bot project directory (default: current dir or the demo)."


class GraphCommandError(LlmosError):
    """A knowledge-graph error (``knowledge.errors.KnowledgeError``) surfaced through the CLI."""


@contextmanager
def _graph_errors() -> Iterator[None]:
    from knowledge.errors import KnowledgeError

    try:
        yield
    except KnowledgeError as exc:
        raise GraphCommandError(str(exc)) from None
    except ValueError as exc:  # e.g. an unknown aggregator name
        raise GraphCommandError(str(exc)) from None


def _load_graph(project, kb: Path | None):
    from knowledge.graph import KnowledgeGraph, read_triples_file

    if kb is not None:
        kg = KnowledgeGraph()
        kg.add_triples(read_triples_file(kb), doc_id=kb.name)
        return kg
    path = project.knowledge_store / "graph.json"
    kg = KnowledgeGraph.load(path)
    if kg.stats()["facts"] == 0:
        raise GraphCommandError(
            f"the project's knowledge graph is empty ({path}); run `llmos ingest` or pass --kb FILE"
        )
    return kg


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    @train_app.command("gnn")
    def train_gnn_cmd(
        kgqa: Path = typer.Option(..., "--kgqa", help="Questions with answers (MetaQA/PQ/JSONL)."),
        kb: Path | None = typer.Option(None, "--kb", help="Triples file (default: project graph)."),
        hops: int = typer.Option(2, "--hops", min=1, max=4, help="Reasoning hops."),
        epochs: int = typer.Option(5, "--epochs", min=1, max=1000),
        aggr: str = typer.Option("mean", "--aggr", help="mean | sum | max"),
        dim: int = typer.Option(64, "--dim", min=8, max=1024),
        layers: int = typer.Option(2, "--layers", min=0, max=8),
        batch_size: int = typer.Option(32, "--batch-size", min=1, max=4096),
        lr: float = typer.Option(3e-3, "--lr"),
        threads: int = typer.Option(
            1,
            "--threads",
            min=1,
            max=256,
            help="torch CPU threads. The GNN's many small scatter ops run faster on one "
            "(PQ-2H: 12.5 s on 1 thread, 117 s on 2, on a busy 2-core machine).",
        ),
        out: Path | None = typer.Option(None, "--out", help="Default: <project>/models/gnn."),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """Train the graph reasoner (GNN) on questions with known answers."""
        import torch

        from assistant.project import resolve_project

        torch.set_num_threads(threads)
        proj = resolve_project(project)
        with _graph_errors():
            from knowledge.embed import shared_embedder
            from knowledge.gnn import resolve_aggregation
            from knowledge.kgqa_data import read_kgqa
            from knowledge.kgqa_train import train_gnn

            resolve_aggregation(aggr)
            examples = read_kgqa(kgqa)
            kg = _load_graph(proj, kb)
            out_dir = out or proj.model_dir("gnn")
            res = train_gnn(
                kg, examples, shared_embedder(), out_dir, hops=hops, epochs=epochs, aggr=aggr,
                dim=dim, layers=layers, batch_size=batch_size, lr=lr,
            )  # fmt: skip
        typer.echo(
            f"trained on {res.used} questions ({res.skipped} skipped: no linked topic or "
            f"answer in the graph) in {res.seconds:.1f}s; final loss {res.losses[-1]:.4f}"
        )
        typer.echo(f"model: {out_dir}  loss curve: {out_dir / 'loss.png'}")

    @eval_app.command("kgqa")
    def eval_kgqa_cmd(
        data: Path = typer.Option(..., "--data", help="Questions with answers (MetaQA/PQ/JSONL)."),
        kb: Path | None = typer.Option(None, "--kb", help="Triples file (default: project graph)."),
        model: Path | None = typer.Option(None, "--model", help="Default: <project>/models/gnn."),
        out: Path | None = typer.Option(None, "--out", help="Report directory."),
        project: str | None = typer.Option(None, "--project", help=PROJECT_HELP),
    ) -> None:
        """Hits@1 of the graph reasoner; writes kgqa_eval.md and kgqa_eval.json."""
        from assistant.project import resolve_project

        proj = resolve_project(project)
        with _graph_errors():
            from knowledge.embed import shared_embedder
            from knowledge.kgqa_data import read_kgqa
            from knowledge.kgqa_train import evaluate_reasoner

            examples = read_kgqa(data)
            kg = _load_graph(proj, kb)
            model_dir = model or proj.model_dir("gnn")
            report = evaluate_reasoner(kg, examples, shared_embedder(), model_dir)
        out_dir = out or proj.state / "reports"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "kgqa_eval.json").write_text(json.dumps(report, indent=1), "utf-8")
        (out_dir / "kgqa_eval.md").write_text(_markdown(report, data), "utf-8")
        typer.echo(
            f"hits@1 {100 * report['hits_at_1']:.1f}% on {report['questions']} questions "
            f"({report['mode']}); report: {out_dir / 'kgqa_eval.md'}"
        )


def _markdown(report: dict, data: Path) -> str:
    lines = [
        "# KG QA evaluation",
        "",
        f"- data: `{data}`",
        f"- reasoner: {report['mode']}",
        f"- questions: {report['questions']} (topic linked: {report['linked']})",
        f"- **hits@1: {100 * report['hits_at_1']:.2f}%**",
        "",
        "| question | gold | predicted | hit |",
        "|---|---|---|---|",
    ]
    for e in report["examples"][:50]:
        q = e["question"].replace("|", "/")
        gold = ", ".join(e["gold"][:3]).replace("|", "/")
        lines.append(f"| {q} | {gold} | {(e['predicted'] or '-').replace('|', '/')} | {e['hit']} |")
    return "\n".join(lines) + "\n"
