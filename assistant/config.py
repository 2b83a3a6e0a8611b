"""A bot project's configuration: ``llmos.yaml`` and ``intents.yaml``, validated with pydantic.

Errors name the file, the line and the field (``llmos.yaml line 4: router.confidence_threshold:
Input should be a valid number``) because a user fixing a YAML file needs exactly that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assistant.errors import ConfigError
from assistant.pii import PIIConfig

MAX_CONFIG_BYTES = 2_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnlabelledConfig(_Strict):
    """Unlabelled user messages the router self-trains on (``assistant/router_selftrain.py``)."""

    files: list[str] = Field(default_factory=list)
    """Files of user messages, relative to the project: ``.txt`` (one per line) or ``.jsonl``
    (one ``{"text": ...}`` object per line)."""
    sessions: bool = False
    """Also the user turns stored in this bot's sessions database (PII-redacted first, since
    the router's files keep n-grams of what it trains on). The router retrains at a start once
    ``retrain_after`` messages are new since it was trained."""
    tau: float = Field(0.5, gt=0.0, le=1.0)
    """Keep a pseudo-label when the router's confidence is at least this (0.4-0.7 all helped on
    Banking77; 0.5 with 2 rounds measured best)."""
    rounds: int = Field(1, ge=1, le=10)
    """Label-and-retrain passes over the messages; each costs one more head fit."""
    retrain_after: int = Field(100, ge=0, le=1_000_000)
    """A start keeps the stored self-trained router until at least this many messages are new
    (or gone) since it was trained; 0: retrain on any change. A change to the intents or the
    settings always retrains, and so does ``llmos train router``."""
    max_pool: int = Field(20_000, ge=1, le=1_000_000)
    """At most this many distinct messages (a fixed sample beyond it): training time and the
    stored router grow with it."""
    graph: float = Field(0.0, ge=0.0, le=1.0)
    """Weight of a nearest-neighbour graph's vote in each pseudo-label (0: the router's own
    guess alone). The examples' intents spread over a graph of examples and messages, which
    follows chains of paraphrases. Use it with a low ``tau`` (0.05: where the router and the
    graph disagree the mixed confidence is low, and those are the messages the graph fixes);
    Banking77 10-shot: 88.67 -> 88.93 with the fine-tuned encoder at graph 0.5, tau 0.05."""
    neighbours: int = Field(15, ge=1, le=100)
    """The graph's edges per message."""

    @field_validator("files", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("files")
    @classmethod
    def _file_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name.strip():
                raise ValueError("file names must be non-empty")
            if Path(name).suffix.lower() not in {".txt", ".jsonl"}:
                raise ValueError(f"{name}: must be a .txt or .jsonl file")
        return v

    def settings(self) -> dict[str, Any]:
        """Settings for ``IntentRouter.set_selftrain``."""
        return {
            "tau": self.tau,
            "rounds": self.rounds,
            "max_pool": self.max_pool,
            "graph": self.graph,
            "neighbours": self.neighbours,
        }

    def texts(self, root: Path, sessions_db: Path, pii: PIIConfig | None = None) -> list[str]:
        """Read every configured source; a bad file raises a one-line ``RouterError``."""
        from assistant.pii import redact
        from assistant.router_selftrain import read_session_texts, read_unlabelled_file

        out: list[str] = []
        for name in self.files:
            path = Path(name) if Path(name).is_absolute() else root / name
            out.extend(read_unlabelled_file(path, name))
        if self.sessions:
            out.extend(redact(t, pii) for t in read_session_texts(sessions_db))
        return out


class RouterConfig(_Strict):
    confidence_threshold: float = Field(0.45, ge=0.0, le=1.0)
    """Below this calibrated confidence the assistant asks which skill the user meant."""
    clarify_margin: float = Field(0.10, ge=0.0, le=1.0)
    """Only clarify between two skills when their confidences are this close."""
    out_of_scope_similarity: float = Field(0.30, ge=-1.0, le=1.0)
    """A message whose nearest training example is less similar than this is out of scope."""
    epochs: int = Field(0, ge=0, le=10_000)
    """Head optimiser iterations (L-BFGS); 0 keeps the head's default (200)."""
    finetune_encoder: bool = False
    """Fine-tune a private copy of the MiniLM encoder on the examples before training the head
    (SetFit-like; minutes on a CPU, seconds on a GPU). Off: the frozen encoder, trained in seconds."""
    finetune_epochs: int = Field(10, ge=1, le=100)
    """Passes over the examples when fine-tuning the encoder."""
    finetune_pairs: int = Field(0, ge=0, le=10_000_000)
    """Cap on fine-tuning training items (pairs / anchors); 0: no cap beyond the epochs."""
    finetune_max_seconds: float = Field(0.0, ge=0.0, le=86_400.0)
    """Wall-clock cap on fine-tuning; 0: none (a cap makes results depend on machine speed)."""
    intent_names: bool = False
    """Each intent's name, underscores as spaces ("card_arrival" -> "card arrival"), is one
    more example of the router's head. Helps when the names say what the intents mean; leave
    it off for names such as ``faq_1``."""
    unlabelled: UnlabelledConfig | None = None
    """Self-train the router on unlabelled user messages (files and/or stored sessions);
    None (the default): it learns from the examples only."""

    @field_validator("unlabelled")
    @classmethod
    def _some_source(cls, v: UnlabelledConfig | None) -> UnlabelledConfig | None:
        if v is not None and not v.files and not v.sessions:
            raise ValueError("name files, or set sessions: true")
        return v

    def finetune_settings(self) -> dict[str, Any] | None:
        """Settings for ``IntentRouter(finetune=...)``; None when fine-tuning is off."""
        if not self.finetune_encoder:
            return None
        return {
            "epochs": self.finetune_epochs,
            "pairs": self.finetune_pairs,
            "max_seconds": self.finetune_max_seconds,
        }


class PolicyConfig(_Strict):
    low_confidence_handoff: int = Field(2, ge=0, le=100)
    """Hand over to a person after this many low-confidence turns in a row (0 turns it off)."""
    negative_sentiment_handoff: int = Field(2, ge=0, le=100)
    """Hand over to a person after this many negative messages in a row (0 turns it off)."""
    history_window: int = Field(20, ge=1, le=1000)
    """How many past turns the dialogue manager keeps in view."""


class KnowledgeConfig(_Strict):
    sources: list[str] = Field(default_factory=lambda: ["knowledge"])
    """Folders (relative to the project) ingested automatically when the assistant starts."""
    auto_ingest: bool = True
    index: Literal["auto", "flat", "hnsw"] = "auto"
    """Vector index: exact ("flat") below ``hnsw_threshold`` chunks, HNSW above ("auto")."""
    hnsw_threshold: int = Field(20_000, ge=1)
    ef_search: int | Literal["auto"] = "auto"
    """HNSW search beam: wider finds more true neighbours, slower; "auto" widens with size."""

    @field_validator("ef_search")
    @classmethod
    def _ef_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 65_536:
            raise ValueError("must be between 1 and 65536, or auto")
        return v

    def index_options(self) -> dict[str, Any]:
        """Keyword arguments for ``KnowledgeBase.open``."""
        ef = None if self.ef_search == "auto" else self.ef_search
        return {"index_kind": self.index, "hnsw_threshold": self.hnsw_threshold, "ef_search": ef}


class LMConfig(_Strict):
    model: str = "models/lm"
    corpus: list[str] = Field(default_factory=list)
    dialogues: str | None = None
    train_on_first_run: bool = True
    """The demo trains its small language model in the background on first start."""


class TranslationConfig(_Strict):
    phrasebook: str | None = None
    models: dict[str, str] = Field(default_factory=dict)
    """Language pair ("en-de") -> model directory, relative to the project."""


class EvalConfig(_Strict):
    dir: str = "eval"
    """Evaluation files for `llmos eval` (router.yaml, qa.jsonl, ...), relative to the project."""
    fail_under: dict[str, float] = Field(default_factory=dict)
    """Default `--fail-under` thresholds, e.g. ``router.accuracy: 0.9``."""
    fail_over: dict[str, float] = Field(default_factory=dict)
    """Default `--fail-over` thresholds for lower-is-better metrics, e.g. ``latency.p95_ms``."""


class SessionsConfig(_Strict):
    retention_days: float | None = Field(None, gt=0, le=36_500, strict=True)
    """Delete conversations with no activity for this many days (``llmos serve`` sweeps in
    the background, ``llmos sessions sweep`` once); sessions with an open handoff ticket are
    kept. None (the default): keep conversations forever."""
    sweep_interval_s: float = Field(3600.0, ge=1.0, le=7 * 86_400.0, strict=True)
    """How often ``llmos serve`` runs the retention sweep (it also runs once at start-up)."""

    @property
    def retention_s(self) -> float | None:
        """The retention period in seconds, or None to keep forever."""
        return None if self.retention_days is None else self.retention_days * 86_400.0


class BotConfig(_Strict):
    name: str = "llmos assistant"
    company: str = ""
    description: str = ""
    greeting: str = "Hi! How can I help?"
    language: str = "en"
    router: RouterConfig = Field(default_factory=RouterConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    lm: LMConfig = Field(default_factory=LMConfig)
    translation: TranslationConfig = Field(default_factory=TranslationConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    """How long stored conversations are kept."""
    pii: PIIConfig = Field(default_factory=PIIConfig)
    """What is redacted from logs, exports and handoff tickets (the session store keeps it)."""
    skills: dict[str, Any] = Field(default_factory=dict)
    """``disabled: [name, ...]`` and per-skill settings keyed by skill name."""
    keys: dict[str, str] = Field(default_factory=dict)
    """Terminal UI key bindings: action -> key."""

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @property
    def disabled_skills(self) -> list[str]:
        value = self.skills.get("disabled", [])
        return [str(v) for v in value] if isinstance(value, list) else []


class IntentSpec(_Strict):
    skill: str
    examples: list[str] = Field(min_length=1)
    description: str = ""

    @field_validator("examples")
    @classmethod
    def _non_empty_examples(cls, v: list[str]) -> list[str]:
        out = [e.strip() for e in v]
        if any(not e for e in out):
            raise ValueError("examples must be non-empty strings")
        return out


class IntentsFile(_Strict):
    intents: dict[str, IntentSpec]


# -- loading ------------------------------------------------------------------------------
def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path.name}: file is too large ({len(raw)} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid UTF-8 (byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path.name}{where}: invalid YAML: {problem}") from None
    return data, node


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a line number."""
    line = node.start_mark.line + 1 if node is not None else None
    cur = node
    for part in loc:
        if isinstance(cur, yaml.MappingNode):
            nxt = None
            for k, v in cur.value:
                if str(k.value) == str(part):
                    nxt = v
                    line = k.start_mark.line + 1
                    break
            if nxt is None:
                break
            cur = nxt
        elif isinstance(cur, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(cur.value):
                break
            cur = cur.value[part]
            line = cur.start_mark.line + 1
        else:
            break
    return line


def _validation_message(path: Path, node: yaml.Node | None, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    field = ".".join(str(p) for p in loc) or "(top level)"
    line = _line_of(node, loc)
    where = f" line {line}" if line else ""
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path.name}{where}: {field}: {msg}{more}"


def load_config(path: Path) -> BotConfig:
    """Read and validate ``llmos.yaml``; a missing file gives the defaults."""
    if not path.exists():
        return BotConfig()
    data, node = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} line 1: expected a mapping of settings")
    try:
        return BotConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_validation_message(path, node, err)) from None


def load_intents(path: Path) -> dict[str, IntentSpec]:
    """Read and validate ``intents.yaml``; a missing file means no extra intents."""
    if not path.exists():
        return {}
    data, node = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} line 1: expected `intents:` mapping")
    try:
        return IntentsFile.model_validate(data).intents
    except ValidationError as err:
        raise ConfigError(_validation_message(path, node, err)) from None
