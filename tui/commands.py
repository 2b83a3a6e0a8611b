"""Slash commands: parsing, completion and the command-palette provider.

The same table drives three things so they cannot drift apart: ``/help``, Tab completion in
the prompt, and the Ctrl+P command palette. Parsing is a pure function so it is tested
without a running app.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from collections.abc import Iterator


class CommandError(ValueError):
    """A slash command the user typed cannot be run; the message says why in one line."""


@dataclass(frozen=True)
class SlashCommand:
    name: str
    usage: str
    help: str
    subcommands: tuple[str, ...] = ()
    min_args: int = 0
    max_args: int = 0


COMMANDS: dict[str, SlashCommand] = {
    c.name: c
    for c in [
        SlashCommand(
            "ingest",
            "/ingest PATH...",
            "Add files or folders to the knowledge base.",
            min_args=1,
            max_args=64,
        ),
        SlashCommand(
            "train",
            "/train lm|router|translator",
            "Train a model in the background.",
            ("lm", "router", "translator"),
            1,
            1,
        ),
        SlashCommand("skills", "/skills", "List the assistant's skills."),
        SlashCommand(
            "session",
            "/session new|list|switch ID|rename TITLE|export",
            "Manage conversations.",
            ("new", "list", "switch", "rename", "export"),
            1,
            64,
        ),
        SlashCommand("clear", "/clear", "Clear the chat view (the transcript stays saved)."),
        SlashCommand("help", "/help", "Show commands and keys."),
    ]
}


@dataclass
class ParsedCommand:
    name: str
    args: list[str] = field(default_factory=list)

    @property
    def sub(self) -> str:
        return self.args[0] if self.args else ""


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


def parse(text: str) -> ParsedCommand:
    """Split ``/name arg...`` (shell-style quoting) and check it against :data:`COMMANDS`."""
    text = text.strip()
    if not text.startswith("/") or len(text) < 2:
        raise CommandError("type a command after '/', e.g. /help")
    try:
        parts = shlex.split(text[1:])
    except ValueError as exc:
        raise CommandError(f"cannot parse the command: {exc}") from None
    if not parts:
        raise CommandError("type a command after '/', e.g. /help")
    name, args = parts[0].lower(), parts[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise CommandError(f"unknown command /{name}; try /help")
    if len(args) < cmd.min_args or len(args) > cmd.max_args:
        raise CommandError(f"usage: {cmd.usage}")
    if cmd.subcommands:
        args[0] = args[0].lower()
        if args[0] not in cmd.subcommands:
            raise CommandError(f"usage: {cmd.usage}")
    if name == "session":
        if args[0] == "switch" and len(args) != 2:
            raise CommandError("usage: /session switch ID")
        if args[0] == "rename" and len(args) < 2:
            raise CommandError("usage: /session rename TITLE")
        if args[0] in {"list", "export"} and len(args) > 1:
            raise CommandError(f"usage: /session {args[0]}")
    return ParsedCommand(name, args)


def complete(text: str, extra: dict[str, list[str]] | None = None) -> list[str]:
    """Completions of a partly typed command line; ``extra`` adds e.g. session ids by subcommand.

    Returns whole lines ("/session switch ab12") so the prompt can replace its text.
    """
    if not text.startswith("/"):
        return []
    body = text[1:]
    if " " not in body:
        return [f"/{n} " for n in COMMANDS if n.startswith(body.lower())]
    name, _, rest = body.partition(" ")
    cmd = COMMANDS.get(name.lower())
    if cmd is None or not cmd.subcommands:
        return []
    if " " not in rest:
        return [f"/{cmd.name} {s} " for s in cmd.subcommands if s.startswith(rest.lower())]
    sub, _, arg = rest.partition(" ")
    choices = (extra or {}).get(sub, [])
    return [f"/{cmd.name} {sub} {c}" for c in choices if c.startswith(arg)]


def help_markdown(key_hints: list[tuple[str, str]]) -> str:
    """The text of ``/help``: commands, then keys (as bound now, config overrides included)."""
    lines = ["### Commands", "", "| command | what it does |", "|---|---|"]
    lines += [f"| `{c.usage}` | {c.help} |" for c in COMMANDS.values()]
    lines += ["", "### Keys", "", "| key | action |", "|---|---|"]
    lines += [f"| `{k}` | {d} |" for k, d in key_hints]
    lines += [
        "| `Enter` | send |",
        "| `Shift+Enter` / `Ctrl+J` | new line (Ctrl+J works in every terminal) |",
        "| `Up` / `Down` | message history (on the first / last line) |",
        "| `Tab` | complete a /command |",
    ]
    return "\n".join(lines)


# -- command palette -----------------------------------------------------------------------
PALETTE_ACTIONS: list[tuple[str, str, str]] = [
    ("New session", "/session new", "Start a new conversation"),
    ("List sessions", "/session list", "Show stored conversations"),
    ("Export session", "/session export", "Write this conversation as Markdown"),
    ("Train router", "/train router", "Retrain the intent router"),
    ("Train language model", "/train lm", "Train the local language model"),
    ("Train translator", "/train translator", "Train the translation model"),
    ("Ingest knowledge folder", "/ingest knowledge", "Re-ingest the project's knowledge/ folder"),
    ("Skills", "/skills", "List the assistant's skills"),
    ("Clear chat", "/clear", "Clear the chat view"),
    ("Help", "/help", "Commands and keys"),
]


class SlashCommandProvider(Provider):
    """Offers the slash commands (and session switching) in the Ctrl+P palette."""

    def _entries(self) -> Iterator[tuple[str, str, str]]:
        yield from PALETTE_ACTIONS
        app: Any = self.app
        for sid, title in getattr(app, "session_choices", lambda: [])():
            yield (f"Switch to session {title or sid}", f"/session switch {sid}", sid)

    def _runner(self, line: str) -> Any:
        app: Any = self.app
        return partial(app.run_slash_command, line)

    async def discover(self) -> Hits:
        for label, line, help_text in self._entries():
            yield DiscoveryHit(label, self._runner(line), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, line, help_text in self._entries():
            score = max(matcher.match(label), matcher.match(line))
            if score > 0:
                yield Hit(score, matcher.highlight(label), self._runner(line), help=help_text)
