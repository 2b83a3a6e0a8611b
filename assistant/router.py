"""Intent router: text + conversation -> which skill, how sure, with which slots and referent.

Classification uses MiniLM sentence embeddings (``knowledge.embed``) and a small head
(``assistant.router_head.IntentHead``) trained in seconds from the bot's ``intents.yaml`` plus
every registered skill's example utterances. The trained router is stored as safetensors
(head weights, example embeddings) + JSON (classes, intent -> skill map, a fingerprint of the
examples) and retrained only when the examples change.

With fine-tuning on (``finetune=`` here, ``router.finetune_encoder`` in ``llmos.yaml``), the
router first fine-tunes its own copy of the MiniLM body (``assistant.router_finetune``), saves it
as ``encoder.safetensors`` beside the head and embeds every message with it; retrieval keeps the
stock encoder.

With unlabelled user messages (``set_selftrain``, ``router.unlabelled`` in ``llmos.yaml``), the
head is self-trained (``assistant.router_selftrain``): it labels those messages itself, keeps
the confident ones and is retrained on examples + kept. The messages are part of the
fingerprint, so new ones retrain the router and a start without them does not reuse it; with
``retrain_after`` (``router.unlabelled.retrain_after``) a start keeps the stored router until
that many messages are new or gone, since session turns arrive with every conversation.

With ``intent_names`` (``router.intent_names``), each intent's name, underscores as spaces, is
one more example of the head ("card_arrival" -> "card arrival"): for well-named intents a
plainer paraphrase than most examples (Banking77 10-shot, see BENCHMARKS.md).

Out of scope: a message whose nearest training example is far away (cosine below
``out_of_scope_similarity``) or that the head assigns to an ``out_of_scope`` intent.
Follow-ups ("summarize that", "and in French?", "tell me more") are resolved by the rules in
``assistant.slots`` against the session context.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant import slots as slot_rules
from assistant.errors import RouterError
from knowledge.atomic import atomic_write

LOG = logging.getLogger(__name__)

if TYPE_CHECKING:
    from assistant.router_finetune import FinetuneSettings
    from assistant.router_selftrain import SelfTrainSettings

ROUTER_FORMAT = 1


@dataclass
class Example:
    intent: str
    skill: str
    text: str


@dataclass
class RouteContext:
    """What the router may look at besides the message."""

    last_reply: str | None = None
    last_user_text: str | None = None
    last_document: str | None = None
    last_skill: str | None = None
    has_history: bool = False
    document_names: list[str] = field(default_factory=list)


@dataclass
class Intent:
    intent: str
    skill: str
    confidence: float
    slots: dict[str, str] = field(default_factory=dict)
    referent_kind: str | None = None
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # (skill, confidence)
    out_of_scope: bool = False
    follow_up: bool = False
    similarity: float = 0.0  # cosine to the nearest training example


def fingerprint(examples: list[Example], hparams: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(hparams, sort_keys=True).encode())
    for ex in sorted(examples, key=lambda e: (e.intent, e.skill, e.text)):
        h.update(f"{ex.intent}\x00{ex.skill}\x00{ex.text}\x01".encode("utf-8", "replace"))
    return h.hexdigest()


class IntentRouter:
    """Trains, persists and applies the intent classifier."""

    def __init__(
        self,
        embedder: Any,
        model_dir: Path | None,
        *,
        out_of_scope_similarity: float = 0.30,
        head_params: dict[str, Any] | None = None,
        finetune: Any = None,
        unlabelled: Sequence[str] | None = None,
        selftrain: Any = None,
        retrain_after: int = 0,
        intent_names: bool = False,
    ) -> None:
        self.embedder = embedder
        # None: the frozen encoder (default); else a FinetuneSettings or a dict of its fields
        self.finetune: FinetuneSettings | None = None
        self.set_finetune(finetune)
        # None: the head learns from the examples only (default); else self-training settings
        self.selftrain: SelfTrainSettings | None = None
        self.unlabelled: list[str] = []
        self._unlabelled_sha256: str | None = None
        self.selftrain_stats: dict[str, Any] | None = None  # of the router trained or loaded
        self.set_selftrain(unlabelled, selftrain)
        # a stored self-trained router whose examples and settings still match is kept until
        # this many unlabelled messages are new or gone (0: any change retrains)
        self.retrain_after = retrain_after
        # each intent's name ("card_arrival" -> "card arrival") as one more example of the head
        self.intent_names = intent_names
        self.encoder: Any = None  # the fine-tuned encoder when one is trained or loaded
        self.encoder_settings: FinetuneSettings | None = None  # the settings it was made with
        self.finetune_stats: dict[str, Any] | None = None
        self.train_stats: dict[str, Any] | None = None  # what the last train() returned
        self.model_dir = model_dir
        self.oos_similarity = out_of_scope_similarity
        self.head_params = head_params or {}
        self.head: Any = None
        self.intent_skill: dict[str, str] = {}
        self.example_vecs: np.ndarray = np.zeros((0, 384), dtype=np.float32)
        self.example_intents: list[str] = []
        self.fingerprint: str | None = None
        self._base_fingerprint: str | None = None  # the same without the unlabelled messages
        self.trained_at: float | None = None
        self.train_seconds: float = 0.0

    # -- training ----------------------------------------------------------------------
    def set_finetune(self, finetune: Any) -> None:
        """Switch encoder fine-tuning on (settings or a dict of them) or off (None)."""
        from assistant.router_finetune import FinetuneSettings

        try:
            self.finetune = (
                finetune
                if finetune is None or isinstance(finetune, FinetuneSettings)
                else FinetuneSettings.from_dict(finetune)
            )
        except (TypeError, ValueError) as exc:
            raise RouterError(f"invalid router fine-tuning settings: {exc}") from None

    def set_selftrain(self, unlabelled: Sequence[str] | None, settings: Any = None) -> None:
        """Self-train on ``unlabelled`` texts (settings, a dict of them, or None: defaults);
        ``unlabelled=None`` switches it off. An empty list keeps it on with an empty pool."""
        if unlabelled is None:
            self.selftrain, self.unlabelled, self._unlabelled_sha256 = None, [], None
            return
        from assistant.router_selftrain import SelfTrainSettings, pool_digest

        if isinstance(unlabelled, str) or not all(isinstance(t, str) for t in unlabelled):
            raise RouterError("unlabelled utterances must be a list of strings")
        try:
            st = (
                settings
                if isinstance(settings, SelfTrainSettings)
                else SelfTrainSettings.from_dict(settings or {})
            )
        except (TypeError, ValueError) as exc:
            raise RouterError(f"invalid router self-training settings: {exc}") from None
        self.selftrain = st
        self.unlabelled = list(unlabelled)
        self._unlabelled_sha256 = pool_digest(self.unlabelled)

    def _fp_params(self, with_pool: bool = True) -> dict[str, Any]:
        # the frozen router's fingerprint is exactly what it was before fine-tuning existed
        if self.finetune is None and self.selftrain is None and not self.intent_names:
            return self.head_params
        params: dict[str, Any] = {"head": self.head_params}
        if self.intent_names:
            params["intent_names"] = True
        if self.finetune is not None:
            params["finetune_encoder"] = self.finetune.as_dict()
        if self.selftrain is not None:
            # the messages by digest: a new one retrains, reordered or repeated ones do not
            params["selftrain"] = {
                **self.selftrain.as_dict(),
                "unlabelled_sha256": self._unlabelled_sha256 if with_pool else None,
            }
        return params

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Every vector the router computes comes from here: fine-tuned encoder if any."""
        return self._view(self.encoder, self.encoder_settings).encode(texts)

    def _view(self, encoder: Any, settings: FinetuneSettings | None) -> Any:
        """What the head sees: stock vectors, fine-tuned ones, or both side by side."""
        if encoder is None:
            return self.embedder
        if settings is not None and settings.concat:
            from assistant.router_finetune import ConcatEncoder

            return ConcatEncoder(self.embedder, encoder)
        return encoder

    def ensure_trained(self, examples: list[Example]) -> bool:
        """Load the stored router if its examples match, else train and save. True if trained."""
        fp = fingerprint(examples, self._fp_params())
        if self.fingerprint == fp:
            return False
        if self.model_dir is not None and (self._load(fp) or self._load_if_pool_close(examples)):
            return False
        self.train(examples)
        return True

    def _load_if_pool_close(self, examples: list[Example]) -> bool:
        """Load the stored self-trained router when only its unlabelled messages changed, and
        fewer than ``retrain_after`` of them: with ``sessions: true`` every conversation adds
        some, and a retrain (minutes) at every start would buy next to nothing."""
        if self.selftrain is None or self.retrain_after <= 0:
            return False
        from assistant.router_selftrain import pool_keys

        base = fingerprint(examples, self._fp_params(with_pool=False))
        now = pool_keys(self.unlabelled)

        def close(doc: dict[str, Any], tensors: dict[str, np.ndarray]) -> bool:
            stored = tensors.get("pool_keys")
            if doc.get("base_fingerprint") != base or stored is None:
                return False
            changed = len(np.setxor1d(now, stored.astype(np.uint64), assume_unique=True))
            if changed >= self.retrain_after:
                return False
            LOG.info(
                "router: %d unlabelled messages changed since it was trained (retrain at %d); "
                "keeping the stored router",
                changed,
                self.retrain_after,
            )
            return True

        return self._load(None, accept=close)

    def train(self, examples: list[Example]) -> dict[str, Any]:
        from assistant.router_head import IntentHead, name_examples

        if not examples:
            raise RouterError("no example utterances to train the router on")
        intents = {e.intent for e in examples}
        if len(intents) < 2:
            raise RouterError("the router needs at least two intents with examples")
        skill_of: dict[str, str] = {}
        for e in examples:
            if skill_of.setdefault(e.intent, e.skill) != e.skill:
                raise RouterError(
                    f"intent {e.intent!r} is mapped to two skills: {skill_of[e.intent]!r} and {e.skill!r}"
                )
        t0 = time.perf_counter()
        texts = [e.text for e in examples]
        labels = [e.intent for e in examples]
        encoder, ft_stats = self._finetune(texts, labels) if self.finetune else (None, None)
        view = self._view(encoder, self.finetune)
        X = view.encode(texts)
        # the head may also learn from the intents' names; the encoder's fine-tuning and the
        # out-of-scope examples below do not (names in the fine-tuning measured worse)
        named = name_examples(skill_of) if self.intent_names else []
        Xh, head_labels, head_texts = X, labels, texts
        if named:
            Xh = np.vstack([X, view.encode([t for _, t in named])])
            head_labels = [*labels, *(i for i, _ in named)]
            head_texts = [*texts, *(t for _, t in named)]
        st_stats = None
        try:
            if self.selftrain is not None:
                head, st_stats = self._self_train(view, Xh, head_labels, head_texts)
            else:
                head = IntentHead(seed=0, **self.head_params)
                head.fit(Xh, head_labels, texts=head_texts)
        except (ValueError, RuntimeError) as exc:
            raise RouterError(f"could not train the router: {exc}") from None
        # only now, with everything trained, does the router switch to the new parts
        self.head = head
        self.encoder = encoder
        self.encoder_settings = self.finetune if encoder is not None else None
        self.finetune_stats = ft_stats
        self.selftrain_stats = st_stats
        self.intent_skill = skill_of
        # the labelled examples only: out-of-scope is "far from every example", and a confident
        # pseudo-label on an out-of-scope message must not widen what counts as in scope
        self.example_vecs = X.astype(np.float32)
        self.example_intents = labels
        self.fingerprint = fingerprint(examples, self._fp_params())
        self._base_fingerprint = (
            fingerprint(examples, self._fp_params(with_pool=False)) if self.selftrain else None
        )
        self.trained_at = time.time()
        self.train_seconds = time.perf_counter() - t0
        if self.model_dir is not None:
            self._save()
        stats: dict[str, Any] = {
            "examples": len(examples),
            "intents": len(intents),
            "seconds": round(self.train_seconds, 2),
        }
        if self.intent_names:
            stats["intent_names"] = len(named)
        if self.finetune_stats is not None:
            ft = self.finetune_stats
            stats["finetune"] = {k: ft[k] for k in ("steps", "seconds", "device", "stopped")}
        if self.selftrain_stats is not None:
            stats["selftrain"] = self.selftrain_stats
        self.train_stats = stats
        return stats

    def _self_train(
        self, view: Any, X: np.ndarray, labels: list[str], texts: list[str]
    ) -> tuple[Any, dict[str, Any]]:
        """The head, self-trained on the unlabelled texts embedded by the head's own view."""
        from assistant.router_head import IntentHead
        from assistant.router_selftrain import prepare_pool, self_train

        assert self.selftrain is not None
        pool, pool_stats = prepare_pool(self.unlabelled, texts, self.selftrain)
        U = view.encode(pool) if pool else np.zeros((0, X.shape[1]), dtype=np.float32)
        head, stats = self_train(
            X,
            labels,
            texts,
            U,
            pool,
            self.selftrain,
            make_head=lambda: IntentHead(seed=0, **self.head_params),
        )
        return head, {**pool_stats, **stats, "settings": self.selftrain.as_dict()}

    def _finetune(self, texts: list[str], labels: list[str]) -> tuple[Any, dict[str, Any]]:
        from assistant.router_finetune import finetune_encoder

        load = getattr(self.embedder, "load", None)
        if load is None:
            raise RouterError("encoder fine-tuning needs the MiniLM embedder (knowledge.embed)")
        try:
            return finetune_encoder(load(), texts, labels, self.finetune)
        except ValueError as exc:
            raise RouterError(f"could not fine-tune the router's encoder: {exc}") from None

    # -- persistence -------------------------------------------------------------------
    def _save(self) -> None:
        """Weights first, then ``router.json`` naming their sha256: a save cut short by a full
        disk or an I/O error leaves the old router, or a mix that :meth:`_load` refuses."""
        from safetensors.numpy import save

        assert self.model_dir is not None and self.head is not None
        tensors, meta = self.head.state_dict()
        tensors = {f"head.{k}": np.ascontiguousarray(v) for k, v in tensors.items()}
        tensors["examples"] = np.ascontiguousarray(self.example_vecs)
        if self.selftrain is not None:
            from assistant.router_selftrain import pool_keys

            tensors["pool_keys"] = pool_keys(self.unlabelled)
        weights = save(tensors)
        doc = {
            "format": ROUTER_FORMAT,
            "fingerprint": self.fingerprint,
            "base_fingerprint": self._base_fingerprint,
            "intent_skill": self.intent_skill,
            "example_intents": self.example_intents,
            "head_meta": meta,
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "trained_at": self.trained_at,
            "train_seconds": self.train_seconds,
        }
        if self.selftrain_stats is not None:
            doc["selftrain"] = self.selftrain_stats
        try:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            if self.encoder is not None:
                from assistant.router_finetune import ENCODER_FILE

                # weights first: router.json, written last, names their checksum
                doc["encoder"] = {
                    "file": ENCODER_FILE,
                    "sha256": self.encoder.save(self.model_dir / ENCODER_FILE),
                    "settings": self.encoder_settings.as_dict() if self.encoder_settings else None,
                }
            atomic_write(self.model_dir / "router.safetensors", weights)
            atomic_write(self.model_dir / "router.json", json.dumps(doc, indent=1).encode("utf-8"))
            if self.encoder is None:  # a frozen retrain leaves no stale 90 MB encoder behind
                from assistant.router_finetune import ENCODER_FILE

                (self.model_dir / ENCODER_FILE).unlink(missing_ok=True)
        except OSError as exc:  # disk full, I/O error: the trained router still serves
            raise RouterError(
                f"cannot save the router in {self.model_dir} ({exc.strerror or exc}); "
                "it works until the next start, which retrains it"
            ) from None

    def _load(
        self,
        expected_fp: str | None,
        accept: Callable[[dict[str, Any], dict[str, np.ndarray]], bool] | None = None,
    ) -> bool:
        from safetensors import SafetensorError
        from safetensors.numpy import load

        from assistant.router_head import IntentHead

        assert self.model_dir is not None
        meta_path = self.model_dir / "router.json"
        weights = self.model_dir / "router.safetensors"
        if not (meta_path.is_file() and weights.is_file()):
            return False
        try:
            doc = json.loads(meta_path.read_text(encoding="utf-8"))
            if doc.get("format") != ROUTER_FORMAT:
                return False
            if expected_fp is not None and doc.get("fingerprint") != expected_fp:
                return False
            blob = weights.read_bytes()
            want = doc.get("weights_sha256")  # absent in routers saved before it was recorded
            if want is not None and hashlib.sha256(blob).hexdigest() != want:
                return False  # weights of another generation (a save cut short)
            tensors = load(blob)
            if accept is not None and not accept(doc, tensors):
                return False
            head_t = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
            head = IntentHead.from_state(head_t, doc["head_meta"])
            example_vecs = tensors["examples"].astype(np.float32)
            encoder, enc_settings = self._load_encoder(doc.get("encoder"))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError, RouterError):
            return False  # a damaged router is retrained, never trusted
        self.head = head
        self.example_vecs = example_vecs
        self.encoder = encoder
        self.encoder_settings = enc_settings
        self.intent_skill = dict(doc["intent_skill"])
        self.example_intents = list(doc["example_intents"])
        self.fingerprint = doc.get("fingerprint")
        self._base_fingerprint = doc.get("base_fingerprint")
        st = doc.get("selftrain")
        self.selftrain_stats = st if isinstance(st, dict) else None
        self.trained_at = doc.get("trained_at")
        self.train_seconds = float(doc.get("train_seconds", 0.0))
        return True

    def _load_encoder(self, entry: Any) -> tuple[Any, FinetuneSettings | None]:
        """The stored fine-tuned encoder and its settings (None for a frozen router).

        Raises if the weights are damaged or the settings malformed.
        """
        if entry is None:
            return None, None
        from assistant.router_finetune import ENCODER_FILE, FinetunedEncoder, FinetuneSettings

        settings = FinetuneSettings.from_dict(entry["settings"])

        assert self.model_dir is not None
        load = getattr(self.embedder, "load", None)
        if load is None:
            raise RouterError("this router's fine-tuned encoder needs the MiniLM embedder")
        # EncoderWeightsError (a ValueError) when missing, damaged or of the wrong shape
        path = self.model_dir / ENCODER_FILE
        return FinetunedEncoder.load(load(), path, entry["sha256"]), settings

    def load(self) -> bool:
        """Load whatever router is stored, without checking its examples."""
        return self.model_dir is not None and self._load(None)

    # -- inference ---------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.head is not None

    def classify(self, text: str) -> tuple[list[tuple[str, float]], float]:
        """Intent probabilities (best first) and the cosine to the nearest training example."""
        if self.head is None:
            raise RouterError("the router is not trained yet: run `llmos train router`")
        v = self._encode([text])
        probs = self.head.predict_proba(v, texts=[text])[0]
        order = np.argsort(-probs)
        ranked = [(self.head.classes[i], float(probs[i])) for i in order]
        sim = float((self.example_vecs @ v[0]).max()) if len(self.example_vecs) else 0.0
        return ranked, sim

    def skill_scores(self, ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """Sum intent probabilities per skill: several intents may share the QA skill."""
        per: dict[str, float] = {}
        for intent, p in ranked:
            skill = self.intent_skill.get(intent, intent)
            per[skill] = per.get(skill, 0.0) + p
        return sorted(per.items(), key=lambda kv: -kv[1])

    def route(self, text: str, ctx: RouteContext | None = None) -> Intent:
        ctx = ctx or RouteContext()
        ranked, sim = self.classify(text)
        skills = self.skill_scores(ranked)
        best_intent, _ = ranked[0]
        best_skill, best_conf = skills[0]
        out_of_scope = sim < self.oos_similarity or best_skill == "fallback"
        intent = Intent(
            intent=best_intent,
            skill=best_skill,
            confidence=best_conf,
            alternatives=skills[1:4],
            out_of_scope=out_of_scope,
            similarity=sim,
        )
        fu = slot_rules.follow_up(text, ctx.last_skill, ctx.has_history)
        if fu is not None:
            intent.follow_up = True
            intent.referent_kind = fu.referent_kind
            if fu.skill is not None:
                if fu.skill != intent.skill:
                    intent.alternatives = [(intent.skill, intent.confidence), *intent.alternatives]
                    intent.intent = fu.skill
                intent.skill = fu.skill
                intent.out_of_scope = False
                # the rule is exact about the skill; confidence is at least the classifier's
                intent.confidence = max(intent.confidence, dict(skills).get(fu.skill, 0.0), 0.9)
        self._fill_slots(text, intent, ctx)
        return intent

    def _fill_slots(self, text: str, intent: Intent, ctx: RouteContext) -> None:
        lang = slot_rules.target_language(text)
        if lang is None and intent.referent_kind == "translate_source":
            lang = slot_rules.any_language(text)
        if lang:
            intent.slots["target_language"] = lang
        length = slot_rules.summary_length(text)
        if length:
            intent.slots["length"] = length
        doc = slot_rules.document_name(text, ctx.document_names)
        if doc:
            intent.slots["document"] = doc
