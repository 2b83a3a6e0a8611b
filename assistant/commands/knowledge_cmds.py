"""CLI commands of the knowledge base: ``ingest``, ``forget``, ``eval qa``, ``eval retrieval``.

Heavy modules (FAISS, the embedder, pypdf) are imported inside the commands so that
``llmos --help`` stays fast. Knowledge errors become one ``error:`` line via LlmosError.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from assistant.errors import InputError, LlmosError

PROJECT_HELP = "Bot project directory (default: current dir or the demo)."


def _embedder(store: Path):
    """MiniLM with a vector cache beside the store, so nothing is embedded twice."""
    from knowledge.embed import Embedder

    return Embedder(cache_path=store / "embed_cache.db")


@contextmanager
def _open_kb(
    project: str | None,
    index_kind: str | None = None,
    max_mb: float | None = None,
    *,
    sources: bool = False,
):
    from assistant.config import load_config
    from assistant.project import resolve_project
    from knowledge.base import KnowledgeBase
    from knowledge.errors import KnowledgeError

    proj = resolve_project(project)
    store = proj.knowledge_store
    # llmos.yaml's index settings, so the CLI and the chat open the same index; --index wins.
    cfg = load_config(proj.config_file)
    kwargs: dict[str, Any] = cfg.knowledge.index_options()
    if index_kind is not None:
        kwargs["index_kind"] = index_kind
    if max_mb is not None:
        kwargs["max_bytes"] = int(max_mb * 1024 * 1024)
    try:
        emb = _embedder(store)
        kb = KnowledgeBase.open(store, emb, **kwargs)
    except KnowledgeError as exc:
        raise LlmosError(str(exc)) from exc
    try:
        if sources:
            _ingest_sources(proj, kb, cfg)
        yield proj, kb
    except KnowledgeError as exc:
        raise LlmosError(str(exc)) from exc
    finally:
        kb.close()
        if hasattr(emb, "close"):
            emb.close()


def _ingest_sources(proj, kb, cfg=None) -> None:
    """Bring the project's configured folders up to date, as the assistant does at start-up,
    so an evaluation sees the same knowledge the chat answers from."""
    from assistant.config import load_config

    cfg = cfg or load_config(proj.config_file)
    if not cfg.knowledge.auto_ingest:
        return
    roots = [proj.root / s for s in cfg.knowledge.sources]
    roots = [r for r in roots if r.exists()]
    if roots:
        kb.ingest(roots, roots=roots, sync=True)


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    @app.command()
    def ingest(
        paths: list[str] = typer.Argument(
            None, help="Files or folders (default: the project's knowledge/)."
        ),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
        sync: bool = typer.Option(
            False, "--sync", help="Also drop stored documents whose files are gone."
        ),
        max_mb: float = typer.Option(50.0, "--max-mb", help="Skip files larger than this many MB."),
        index_kind: str | None = typer.Option(
            None, "--index", help="Vector index: auto, flat or hnsw (default: llmos.yaml's)."
        ),
    ) -> None:
        """Add documents, FAQ files and triples to the knowledge base (incremental)."""
        with _open_kb(project, index_kind, max_mb) as (proj, kb):
            targets = [Path(p).expanduser().absolute() for p in (paths or [])]
            targets = targets or [proj.knowledge_dir]
            missing = [str(t) for t in targets if not t.exists() and not t.is_symlink()]
            if missing:
                raise InputError(f"no such file or folder: {', '.join(missing)}")
            report = kb.ingest(targets, sync=sync, show_progress=True)
            for _path, err in report.errors:
                typer.secho(f"skipped: {err}", fg="yellow", err=True)
            stats = kb.stats()
            typer.echo(
                f"added {len(report.added)}, updated {len(report.updated)}, unchanged "
                f"{len(report.unchanged)}, removed {len(report.removed)}, skipped "
                f"{len(report.errors)}; {report.chunks} new chunks in {report.seconds:.1f}s"
            )
            typer.echo(
                f"knowledge base: {stats['documents']} documents, {stats['chunks']} passages, "
                f"{stats['faq']} FAQ entries, {stats['entities']} entities, {stats['facts']} facts"
            )

    @app.command()
    def forget(
        path: str = typer.Argument(
            ..., help="A file or folder that was ingested (or its file name)."
        ),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
    ) -> None:
        """Remove a document (or every document under a folder) from the knowledge base."""
        with _open_kb(project) as (_, kb):
            if not kb.forget(path):
                raise InputError(f"not in the knowledge base: {path}")
            typer.echo(f"forgot {path}")

    @eval_app.command("qa")
    def eval_qa(
        data: str = typer.Option(..., "--data", help="JSONL: question, answer, optional source."),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
    ) -> None:
        """Answer accuracy of the knowledge base on a JSONL file of questions."""
        from knowledge.evaluation import eval_qa as run
        from knowledge.evaluation import load_jsonl, write_report

        with _open_kb(project, sources=True) as (proj, kb):
            report = run(kb, load_jsonl(data, ("question", "answer")))
            md = write_report(report, proj.state / "reports", "qa_eval")[1]
        src = report["source_accuracy"]
        typer.echo(
            f"answer accuracy {report['accuracy']:.4f}, found {report['found_rate']:.4f}"
            + (f", source accuracy {src:.4f}" if src is not None else "")
            + f" ({report['n']} questions)"
        )
        typer.echo(f"report: {md}")

    @eval_app.command("retrieval")
    def eval_retrieval(
        data: str = typer.Option(
            ..., "--data", help="JSONL: query, relevant (doc names / FAQ questions)."
        ),
        k: int = typer.Option(5, "--k", min=1, max=100, help="Cut-off for P@k and recall@k."),
        project: str | None = typer.Option(None, "--project", "-p", help=PROJECT_HELP),
    ) -> None:
        """MAP, MRR, recall@k and P@k of knowledge-base search on a JSONL file."""
        from knowledge.evaluation import eval_retrieval as run
        from knowledge.evaluation import load_jsonl, write_report

        with _open_kb(project, sources=True) as (proj, kb):
            report = run(kb, load_jsonl(data, ("query", "relevant")), k=k)
            md = write_report(report, proj.state / "reports", "retrieval_eval")[1]
        typer.echo(
            f"MAP {report['MAP']:.4f}, MRR {report['MRR']:.4f}, recall@{k} "
            f"{report[f'recall@{k}']:.4f}, P@{k} {report[f'P@{k}']:.4f} ({report['n']} queries)"
        )
        typer.echo(f"report: {md}")
