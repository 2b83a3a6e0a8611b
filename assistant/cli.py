"""The ``llmos`` command line.

    llmos init DIR                 scaffold a bot project
    llmos chat [--project DIR]     chat in the terminal
    llmos ask TEXT [--json]        one question, one answer
    llmos demo                     a scripted conversation with the demo assistant
    llmos train router             (re)train the intent router
    llmos train router --unlabelled FILE [--tau X] [--graph W]
                                   ... self-trained on unlabelled user messages too
    llmos eval router --data F     accuracy, macro-F1, confusion matrix
    llmos sessions [sweep]         list stored conversations; delete idle ones

Other packages add commands through ``assistant/commands/*.py`` (ingest, train lm, ...).
Every error a user can cause prints one ``error:`` line and exits non-zero.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from assistant.errors import LlmosError

app = typer.Typer(
    name="llmos",
    help="llmos: a local-first assistant framework. Chat, ingest documents, train models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train models: router, lm, gnn.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Evaluate the whole assistant (no subcommand: one report), or one part of it.",
    invoke_without_command=True,
)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")

PROJECT_OPT = typer.Option(
    None, "--project", "-p", help="Bot project directory (default: current dir or the demo)."
)

COMMAND_MODULES = [
    "assistant.commands.knowledge_cmds",
    "assistant.commands.graph_cmds",
    "assistant.commands.lm_cmds",
    "assistant.commands.seq2seq_cmds",
    "assistant.commands.summary_cmds",
    "assistant.commands.serve_cmds",
    "assistant.commands.session_cmds",
]


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("transformers", "sentence_transformers", "httpx", "faiss", "pypdf"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _assistant(project: str | None, **kwargs: Any) -> Any:
    from assistant.api import Assistant

    return Assistant.from_project(project, **kwargs)


def _echo_reply(reply: Any, show_meta: bool = True) -> None:
    typer.echo(reply.text)
    if show_meta:
        meta = f"  [{reply.skill} · {reply.confidence:.2f}]"
        typer.secho(meta, dim=True)
        for s in reply.sources:
            typer.secho(f"  source: {s.label()}", dim=True)


@app.command()
def init(directory: str = typer.Argument(..., help="Where to create the bot project.")) -> None:
    """Create a bot project: llmos.yaml, intents.yaml, knowledge/, models/."""
    from assistant.scaffold import scaffold

    root = scaffold(Path(directory))
    typer.echo(f"Created bot project in {root}")
    typer.echo(
        f"Next: put documents in {root / 'knowledge'} and run: llmos chat --project {directory}"
    )


@app.command()
def chat(
    project: str | None = PROJECT_OPT,
    plain: bool = typer.Option(
        False, "--plain", help="Line-based chat instead of the full-screen UI."
    ),
) -> None:
    """Chat with the assistant in the terminal."""
    if not plain and sys.stdin.isatty() and sys.stdout.isatty():
        try:
            tui_app = importlib.import_module("tui.app")
        except ImportError:
            tui_app = None
        if tui_app is not None and hasattr(tui_app, "run"):
            tui_app.run(project)
            return
    _plain_chat(project)


def _plain_chat(project: str | None) -> None:
    typer.echo("Loading the assistant…")
    bot = _assistant(project)
    session = bot.new_session()
    typer.echo(f"{bot.config.name} — {bot.config.greeting}")
    typer.echo("(type /quit to leave, /new for a new conversation)")
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("")
            break
        if text.strip() in {"/quit", "/exit", "/q"}:
            break
        if text.strip() == "/new":
            session = bot.new_session()
            typer.echo("(new conversation)")
            continue
        if not text.strip():
            continue
        try:
            sys.stdout.write("bot> ")
            final = None
            for item in bot.stream(text, session):
                if isinstance(item, str):
                    sys.stdout.write(item)
                    sys.stdout.flush()
                else:
                    final = item
            sys.stdout.write("\n")
            if final is not None:
                typer.secho(f"  [{final.skill} · {final.confidence:.2f}]", dim=True)
                for s in final.sources:
                    typer.secho(f"  source: {s.label()}", dim=True)
        except LlmosError as exc:
            typer.echo(f"\nerror: {exc}")
    bot.close()


@app.command()
def ask(
    text: str = typer.Argument(..., help="The message to send."),
    project: str | None = PROJECT_OPT,
    session: str | None = typer.Option(None, "--session", "-s", help="Continue this session id."),
    as_json: bool = typer.Option(False, "--json", help="Print the reply as JSON."),
) -> None:
    """Send one message and print the reply."""
    from assistant.dialogue import validate_message

    validate_message(text)  # fail fast, before loading models
    if session is not None:
        from assistant.project import resolve_project
        from assistant.sessions import SessionStore

        store = SessionStore(resolve_project(project).sessions_db)
        try:
            store.get(session)
        finally:
            store.close()
    bot = _assistant(project)
    try:
        reply = bot.chat(text, session)
    finally:
        bot.close()
    if as_json:
        out = reply.to_dict()
        out["session_id"] = reply.data.get("session_id")
        typer.echo(json.dumps(out, ensure_ascii=False, indent=1))
    else:
        _echo_reply(reply)
        typer.secho(f"  session: {reply.data.get('session_id')}", dim=True)


DEMO_SCRIPT = [
    "hi there",
    "how long does delivery take?",
    "summarize that in one sentence",
    "what is the warranty on the Lumo kettle?",
    "who makes it?",
    "translate 'thank you for your order' into German",
    "and in French?",
    "can you summarize the refund policy in two sentences?",
    "book me a flight to Paris",
    "I want to talk to a person",
    "thanks, bye",
]


@app.command()
def demo(project: str | None = PROJECT_OPT) -> None:
    """Print a scripted multi-turn conversation with the demo assistant (no TTY needed)."""
    bot = _assistant(project)
    session = bot.new_session(title="demo script")
    typer.echo(f"== {bot.config.name} ==")
    try:
        for text in DEMO_SCRIPT:
            typer.echo(f"\nyou> {text}")
            reply = bot.chat(text, session)
            typer.echo(f"bot> {reply.text}")
            typer.echo(f"     [{reply.skill} · confidence {reply.confidence:.2f}]")
            for s in reply.sources[:3]:
                typer.echo(f"     source: {s.label()}")
    finally:
        bot.close()


@app.command("skills")
def list_skills(project: str | None = PROJECT_OPT) -> None:
    """List the skills the assistant has, and plugins that failed to load."""
    from assistant.config import load_config
    from assistant.project import resolve_project
    from skills.registry import SkillRegistry

    proj = resolve_project(project)
    cfg = load_config(proj.config_file)
    reg = SkillRegistry.discover(disabled=cfg.disabled_skills)
    for s in reg.all():
        typer.echo(f"{s.name:12} {s.description}")
    for err in reg.errors:
        typer.secho(f"warning: {err}", fg="yellow", err=True)


@train_app.command("router")
def train_router(
    project: str | None = PROJECT_OPT,
    force: bool = typer.Option(
        False, "--force", help="Retrain even if the examples did not change."
    ),
    finetune: bool = typer.Option(
        False,
        "--finetune",
        help="Fine-tune the MiniLM encoder on the examples first (slower; more accurate). "
        "Set router.finetune_encoder in llmos.yaml to keep it on.",
    ),
    unlabelled: Path | None = typer.Option(
        None,
        "--unlabelled",
        help="Also learn from these unlabelled user messages (.txt: one per line; .jsonl: "
        '{"text": ...} per line) by self-training. Replaces router.unlabelled of llmos.yaml '
        "for this run.",
    ),
    tau: float | None = typer.Option(
        None,
        "--tau",
        min=0.0,
        max=1.0,
        help="Self-training: keep pseudo-labels at least this confident (default 0.5).",
    ),
    graph: float | None = typer.Option(
        None,
        "--graph",
        min=0.0,
        max=1.0,
        help="Self-training: weight of the nearest-neighbour graph's vote in each pseudo-label "
        "(default 0: the router's own guess alone).",
    ),
) -> None:
    """Train the intent router from intents.yaml and the skills' examples (and, with
    --unlabelled or router.unlabelled in llmos.yaml, unlabelled user messages)."""
    # read the unlabelled messages before anything loads or trains: a bad file stops here
    selftrain = _selftrain_source(project, unlabelled, tau, graph)
    # the router trains once below, with this command's settings (not first with llmos.yaml's)
    bot = _assistant(project, knowledge=False, language_model=False, train_router=False)
    try:
        rc = bot.config.router
        bot.router.retrain_after = 0  # asked to train: any new message counts
        if selftrain is not None:
            bot.router.set_selftrain(*selftrain)
        if unlabelled is not None and rc.unlabelled is None:
            typer.echo(
                "note: router.unlabelled is not set in llmos.yaml, so the next start "
                "retrains without these messages; set it to keep the self-trained router"
            )
        if finetune or rc.finetune_encoder:
            settings = rc.model_copy(update={"finetune_encoder": True}).finetune_settings()
            bot.router.set_finetune(settings)
        if finetune and not rc.finetune_encoder:
            typer.echo(
                "note: router.finetune_encoder is off in llmos.yaml, so the next start "
                "retrains the frozen router; set it to true to keep the fine-tuned encoder"
            )
        if force:
            stats = bot.router.train(bot.examples())
        else:
            stats = bot.router.train_stats if bot.router.ensure_trained(bot.examples()) else None
        if stats is None:
            trained = bot.router.trained_at is not None
            stats = {"examples": len(bot.examples()), "intents": len(bot.router.head.classes)}
            typer.echo(
                f"Router is up to date ({stats['examples']} examples, {stats['intents']} intents)"
                if trained
                else "Router trained"
            )
        else:
            typer.echo(
                f"Router trained on {stats['examples']} examples, {stats['intents']} intents "
                f"in {stats['seconds']:.1f}s"
            )
            ft = stats.get("finetune")
            if ft:
                typer.echo(
                    f"Encoder fine-tuned: {ft['steps']} steps on {ft['device']} "
                    f"in {ft['seconds']:.1f}s ({ft['stopped']})"
                )
        st = bot.router.selftrain_stats  # from this run's flags or from llmos.yaml
        if st is not None:
            typer.echo(
                f"Self-training: kept {st.get('kept')} pseudo-labels of {st.get('pool')} "
                f"unlabelled messages (tau {st.get('settings', {}).get('tau')}, "
                f"graph {st.get('settings', {}).get('graph', 0.0)}, "
                f"{len(st.get('rounds', []))} round(s); {st.get('duplicates')} duplicates "
                f"and {st.get('labelled_overlap')} copies of examples skipped)"
            )
        typer.echo(f"Saved to {bot.project.model_dir('router')}")
    finally:
        bot.close()


def _selftrain_source(
    project: str | None, unlabelled: Path | None, tau: float | None, graph: float | None
) -> tuple[list[str], dict[str, Any]] | None:
    """The unlabelled texts and self-training settings that override llmos.yaml for this run;
    None: nothing to override (the assistant reads ``router.unlabelled`` itself, and a bad
    file there stops it before the router trains)."""
    from assistant.config import load_config
    from assistant.errors import RouterError
    from assistant.project import resolve_project
    from assistant.router_selftrain import SelfTrainSettings, read_unlabelled_file

    if unlabelled is None and tau is None and graph is None:
        return None
    proj = resolve_project(project)
    cfg = load_config(proj.config_file)
    uc = cfg.router.unlabelled
    if unlabelled is None and uc is None:  # so --tau or --graph was given alone
        flag = "--tau" if tau is not None else "--graph"
        raise RouterError(f"{flag} needs --unlabelled FILE or router.unlabelled in llmos.yaml")
    settings = uc.settings() if uc is not None else {}
    if tau is not None:
        settings["tau"] = tau
    if graph is not None:
        settings["graph"] = graph
    try:
        SelfTrainSettings.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise RouterError(f"invalid router self-training settings: {exc}") from None
    if unlabelled is not None:
        texts = read_unlabelled_file(unlabelled)
    else:
        assert uc is not None
        texts = uc.texts(proj.root, proj.sessions_db, cfg.pii)
    return texts, settings


@eval_app.callback()
def eval_all(
    ctx: typer.Context,
    project: str | None = PROJECT_OPT,
    out: Path | None = typer.Option(
        None, "--out", help="Report directory (default: <project state>/reports)."
    ),
    only: list[str] = typer.Option(
        [], "--only", help="Run only these sections (repeatable): router, retrieval, qa, ..."
    ),
    fail_under: list[str] = typer.Option(
        [], "--fail-under", help="METRIC=VALUE: exit 1 if the metric is below (repeatable)."
    ),
    fail_over: list[str] = typer.Option(
        [], "--fail-over", help="METRIC=VALUE: exit 1 if the metric is above, e.g. latency."
    ),
) -> None:
    """Every evaluation that applies to the project, in one report (Markdown, JSON, PNG)."""
    if ctx.invoked_subcommand is not None:
        return
    from assistant.report import parse_thresholds, run_report

    under = parse_thresholds(fail_under, "--fail-under")
    over = parse_thresholds(fail_over, "--fail-over")
    bot = _assistant(project)
    try:
        out_dir = out or (bot.project.state / "reports")
        report = run_report(
            bot,
            out_dir,
            only=only or None,
            fail_under={**bot.config.eval.fail_under, **under},
            fail_over={**bot.config.eval.fail_over, **over},
            on_progress=lambda name: typer.secho(f"evaluating {name}…", dim=True, err=True),
        )
    finally:
        bot.close()
    width = max((len(k) for k in report.metrics), default=10)
    for key, value in report.metrics.items():
        before = report.previous.get(key)
        was = f"   (previous {before:.4f})" if before is not None else ""
        typer.echo(f"{key:<{width}}  {value:10.4f}{was}")
    for section in report.sections:
        if section.skipped:
            typer.secho(f"skipped {section.name}: {section.skipped}", dim=True)
    typer.echo(f"report: {out_dir / 'eval_report.md'}")
    if report.failures:
        for line in report.failures:
            typer.secho(f"FAIL {line}", fg="red", err=True)
        raise typer.Exit(1)


@eval_app.command("router")
def eval_router(
    data: Path = typer.Option(
        ..., "--data", help="intents.yaml-style file or CSV/TSV of text,intent."
    ),
    project: str | None = PROJECT_OPT,
    out: Path | None = typer.Option(
        None, "--out", help="Report directory (default: <project>/reports)."
    ),
) -> None:
    """Accuracy, macro-F1, per-intent table and confusion matrix on held-out examples."""
    from assistant.evaluation import evaluate_router, load_eval_file

    load_eval_file(data)  # validate before loading models
    bot = _assistant(project, knowledge=False, language_model=False)
    try:
        out_dir = out or (bot.project.state / "reports")
        report = evaluate_router(bot, data, out_dir)
    finally:
        bot.close()
    m = report["intent"]
    typer.echo(
        f"accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
        f"skill accuracy {report['skill_accuracy']:.4f}  ({report['examples']} examples)"
    )
    typer.echo(f"report: {out_dir / 'router_eval.md'}")


def _register_command_modules() -> None:
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            if exc.name == mod_name:
                continue
            raise
        mod.register(app, train_app, eval_app)


_register_command_modules()


def main() -> None:
    """Entry point: run the CLI, turning user errors into one line and a non-zero exit."""
    _quiet_libraries()
    try:
        app(standalone_mode=False)
    except LlmosError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except (typer.Abort, EOFError):
        sys.exit(1)
    except Exception as exc:  # click usage errors and the unexpected, as one line
        # Typer 0.20+ raises its own vendored copy of click's exceptions (``typer._click``),
        # which are not ``click.ClickException``s: recognise both by name and shape.
        code = getattr(exc, "exit_code", None)
        if type(exc).__name__ == "Exit" and isinstance(code, int):
            sys.exit(code)
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(code, int):
            show()  # "Usage: ... Error: Missing option '--data'."
            sys.exit(code)
        msg = _known_error(exc)
        typer.secho(f"error: {msg}", fg="red", err=True)
        if os.environ.get("LLMOS_DEBUG"):
            raise
        sys.exit(1)


def _known_error(exc: Exception) -> str:
    """Errors of the lower packages carry user-facing messages too."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if name.endswith("Error") and type(exc).__module__.split(".")[0] in {
        "knowledge",
        "lm",
        "skills",
    }:
        return text or name
    return f"{name}: {text} (set LLMOS_DEBUG=1 for details)" if text else name


if __name__ == "__main__":
    main()
