"""The knowledge graph: entities and the facts between them, each fact tied to its sources.

A :class:`KnowledgeGraph` wraps a ``networkx.MultiDiGraph``. Nodes are entities keyed by a
normalised name (case, punctuation, underscores and leading articles removed, so "The Lumo
Kettle." and "lumo kettle" are one node); edges are facts ``subject -relation-> object`` keyed
by relation, and every edge keeps the set of document ids that support it. Removing a document
retracts only the facts no other document supports and drops entities left with no facts.

Facts come from triples files (``add_triples``) and from prose without any language model
(``add_document``, see :mod:`knowledge.graph_extract`). It is persisted as JSON (never pickle)
with an atomic replace; entity embeddings used for linking are cached next to it as
safetensors.

Linking (``link``) finds entities named in a question: exact alias matches of word n-grams,
fuzzy matches (character-trigram candidates re-scored with difflib, for typos), and, when an
embedder is given, cosine similarity between the question and the entity names.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from knowledge.atomic import atomic_write
from knowledge.errors import KnowledgeError

FORMAT = "llmos-graph"
VERSION = 1
MAX_NAME_CHARS = 300
MAX_RELATION_CHARS = 100
MAX_GRAPH_BYTES = 1024 * 1024 * 1024
ALIAS_RELATIONS = frozenset({"alias", "alias_of", "also_known_as", "aka", "same_as", "known_as"})
_ARTICLES = ("the ", "a ", "an ")
_STOP_TEXT = (
    "a an the of in on at to for by with from and or is are was were be been what which who "
    "whom whose where when how why does do did can could would should will my your our their "
    "its it this that these those me i you he she they we about tell much many please there any "
    "some "
)
_STOP = frozenset(_STOP_TEXT.split())


class GraphError(KnowledgeError):
    """The graph file or the facts given to the graph cannot be used."""


def normalize(name: str) -> str:
    """Key under which an entity name is stored: lower case, no punctuation or leading article."""
    s = name.replace("_", " ").lower()
    s = re.sub(r"[^\w\s$€£%.]", " ", s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)  # keep decimal points ("2.5 litres")
    s = " ".join(s.split())
    for art in _ARTICLES:
        if s.startswith(art) and len(s) > len(art):
            s = s[len(art) :]
            break
    return s


def relation_key(relation: str) -> str:
    """``"Made by"`` -> ``"made_by"``."""
    return "_".join(re.sub(r"[^\w\s-]", " ", relation.lower()).replace("-", " ").split())


#: How people ask for the commonest attribute relations; the embedder matches questions
#: ("how much is it?") against these better than against the bare relation name.
_RELATION_GLOSS = {
    "price": "price, how much it costs",
    "costs": "price, how much it costs",
    "cost": "price, how much it costs",
    "warranty": "warranty, how long the guarantee lasts",
    "made_by": "made by, which brand makes it",
    "brand": "brand, who makes it",
    "colours": "colours, which colours it comes in",
    "colors": "colours, which colours it comes in",
    "colour": "colour, which colour it is",
    "capacity": "capacity, how much it holds",
    "weighs": "weight, how heavy it is, what it weighs",
    "weight": "weight, how heavy it is, what it weighs",
    "founded": "founded, who founded it",
    "founded_by": "founded by, who founded it",
    "founded_in": "founded in, when it was founded",
    "located_in": "located in, where it is",
}


#: Relations between two named things, not attributes: their names are never asked for.
_LINKING_RELATIONS = frozenset({"mentioned_with", "is_a"})


def relation_phrase(relation: str) -> str:
    """``"made_by"`` -> ``"made by, which brand makes it"`` (what the embedder reads)."""
    gloss = _RELATION_GLOSS.get(relation.strip().lower())
    return gloss or relation.replace("_", " ").strip()


def _check_text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise GraphError(f"{what} must be a string, got {type(value).__name__}")
    v = " ".join(value.split())
    if not v:
        raise GraphError(f"{what} is empty")
    if len(v) > limit:
        raise GraphError(f"{what} is longer than {limit} characters: {v[:40]!r}...")
    if "\x00" in v:
        raise GraphError(f"{what} contains a NUL byte")
    return v


class KnowledgeGraph:
    """Entities and source-tracked facts over a ``networkx.MultiDiGraph``.

    Node attributes: ``name`` (display form), ``aliases`` (set of normalised alias keys),
    ``docs`` (documents that mention the entity). Edge key = relation; edge attributes:
    ``relation`` and ``docs`` (documents that support the fact).
    """

    def __init__(self) -> None:
        self.g = nx.MultiDiGraph()
        self._alias: dict[str, str] = {}  # normalised alias -> node id
        self._alias_docs: dict[str, set[str]] = defaultdict(set)  # explicit aliases' sources
        self._version = 0
        self._lock = threading.RLock()
        self._emb_cache: tuple[int, list[str], np.ndarray] | None = None
        self._trigrams: tuple[int, dict[str, set[str]]] | None = None
        self._attributes: tuple[int, frozenset[str]] | None = None
        self._path: Path | None = None

    # -- entities ----------------------------------------------------------------------
    def resolve(self, name: str) -> str | None:
        """Node id of an entity name or alias, or ``None``."""
        return self._alias.get(normalize(name))

    def name(self, node: str) -> str:
        return self.g.nodes[node]["name"]

    def entities(self) -> list[str]:
        """Display names of all entities."""
        return [d["name"] for _, d in self.g.nodes(data=True)]

    def relations(self) -> list[str]:
        return sorted({k for _, _, k in self.g.edges(keys=True)})

    def _ensure_entity(self, name: str, doc_id: str | None) -> str:
        key = normalize(name)
        if not key:
            raise GraphError(f"entity name {name!r} has no letters or digits")
        node = self._alias.get(key)
        if node is None:
            node = key
            n = 1
            while node in self.g:  # a node id taken by another entity's alias history
                n += 1
                node = f"{key}#{n}"
            self.g.add_node(node, name=name, aliases={key}, docs=set())
            self._alias[key] = node
        if doc_id is not None:
            self.g.nodes[node]["docs"].add(doc_id)
        return node

    def _merge(self, keep: str, drop: str) -> None:
        """Fold node ``drop`` into ``keep``: its aliases, mentions and facts move over."""
        if keep == drop:
            return
        dk, dd = self.g.nodes[keep], self.g.nodes[drop]
        for a in dd["aliases"]:
            self._alias[a] = keep
        dk["aliases"] |= dd["aliases"]
        dk["docs"] |= dd["docs"]
        moves = [(u, v, k, d) for u, v, k, d in self.g.out_edges(drop, keys=True, data=True)]
        moves += [(u, v, k, d) for u, v, k, d in self.g.in_edges(drop, keys=True, data=True)]
        self.g.remove_node(drop)
        for u, v, k, d in moves:
            u2, v2 = (keep if u == drop else u), (keep if v == drop else v)
            if u2 == v2:
                continue
            self._add_edge(u2, k, v2, d["docs"])

    def _add_edge(self, u: str, rel: str, v: str, docs: Iterable[str]) -> bool:
        if self.g.has_edge(u, v, key=rel):
            self.g.edges[u, v, rel]["docs"].update(docs)
            return False
        self.g.add_edge(u, v, key=rel, relation=rel, docs=set(docs))
        return True

    # -- building ----------------------------------------------------------------------
    def add_triples(self, triples: list[tuple[str, str, str]], doc_id: str) -> int:
        """Add ``(subject, relation, object)`` facts supported by ``doc_id``; returns new facts.

        Relations named ``alias``/``also_known_as``/``same_as`` merge the two entities
        instead of adding an edge.
        """
        doc_id = _check_text(doc_id, "document id", 1000)
        if isinstance(triples, (str, bytes)) or not isinstance(triples, Iterable):
            raise GraphError("triples must be a list of (subject, relation, object) tuples")
        clean: list[tuple[str, str, str]] = []
        for i, t in enumerate(triples):
            if not isinstance(t, (tuple, list)) or len(t) != 3:
                raise GraphError(
                    f"triple {i} is not a (subject, relation, object) tuple: {t!r:.60}"
                )
            s = _check_text(t[0], f"triple {i} subject", MAX_NAME_CHARS)
            r = relation_key(_check_text(t[1], f"triple {i} relation", MAX_RELATION_CHARS))
            o = _check_text(t[2], f"triple {i} object", MAX_NAME_CHARS)
            if not r:
                raise GraphError(f"triple {i} relation {t[1]!r} has no letters or digits")
            clean.append((s, r, o))
        added = 0
        with self._lock:
            for s, r, o in clean:
                su = self._ensure_entity(s, doc_id)
                if r in ALIAS_RELATIONS:
                    key = normalize(o)
                    self._alias_docs[key].add(doc_id)
                    other = self._alias.get(key)
                    if other is None:
                        self._alias[key] = su
                        self.g.nodes[su]["aliases"].add(key)
                    else:
                        self._merge(su, other)
                    continue
                ob = self._ensure_entity(o, doc_id)
                if su != ob and self._add_edge(su, r, ob, [doc_id]):
                    added += 1
            self._touch()
        return added

    def add_document(self, doc_id: str, text: str) -> int:
        """Extract facts from prose without an LLM (see :func:`knowledge.graph_extract.extract`)."""
        from knowledge.graph_extract import extract

        doc_id = _check_text(doc_id, "document id", 1000)
        if not isinstance(text, str):
            raise GraphError(f"document {doc_id}: text must be a string")
        facts, mentions = extract(text)
        with self._lock:
            for m in mentions:
                try:
                    self._ensure_entity(m, doc_id)
                except GraphError:
                    continue
            self._touch()
        return self.add_triples(facts, doc_id) if facts else 0

    def remove_document(self, doc_id: str) -> int:
        """Retract facts only ``doc_id`` supported; drop entities left without facts or mentions.

        Returns how many facts were removed. (Entities merged through an alias stay merged;
        the alias name itself stops linking once no document supports it.)
        """
        removed = 0
        with self._lock:
            for u, v, k, d in list(self.g.edges(keys=True, data=True)):
                if doc_id in d["docs"]:
                    d["docs"].discard(doc_id)
                    if not d["docs"]:
                        self.g.remove_edge(u, v, key=k)
                        removed += 1
            for key, docs in list(self._alias_docs.items()):
                if doc_id in docs:
                    docs.discard(doc_id)
                    if not docs:
                        del self._alias_docs[key]
                        node = self._alias.get(key)
                        if node is not None and key != normalize(self.g.nodes[node]["name"]):
                            del self._alias[key]
                            self.g.nodes[node]["aliases"].discard(key)
            for n, d in list(self.g.nodes(data=True)):
                d["docs"].discard(doc_id)
                if not d["docs"] and self.g.degree(n) == 0:
                    for a in d["aliases"]:
                        if self._alias.get(a) == n:
                            del self._alias[a]
                    self.g.remove_node(n)
            self._touch()
        return removed

    def stats(self) -> dict[str, int]:
        return {"entities": self.g.number_of_nodes(), "facts": self.g.number_of_edges()}

    def facts(self) -> list[tuple[str, str, str, list[str]]]:
        """All facts as ``(subject name, relation, object name, sorted doc ids)``."""
        nm = self.g.nodes
        return [
            (nm[u]["name"], k, nm[v]["name"], sorted(d["docs"]))
            for u, v, k, d in self.g.edges(keys=True, data=True)
        ]

    def _touch(self) -> None:
        self._version += 1

    # -- persistence -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        nodes = [
            {"id": n, "name": d["name"], "aliases": sorted(d["aliases"]), "docs": sorted(d["docs"])}
            for n, d in self.g.nodes(data=True)
        ]
        edges = [
            {"s": u, "r": k, "o": v, "docs": sorted(d["docs"])}
            for u, v, k, d in self.g.edges(keys=True, data=True)
        ]
        alias_docs = {k: sorted(v) for k, v in self._alias_docs.items() if v}
        return {"format": FORMAT, "version": VERSION, "nodes": nodes, "edges": edges,
                "alias_docs": alias_docs}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, source: str = "graph") -> KnowledgeGraph:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GraphError(f"{source}: not an llmos graph file (missing format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise GraphError(f"{source}: unsupported graph version {data.get('version')!r}")
        kg = cls()
        try:
            for nd in data["nodes"]:
                nid = _check_text(nd["id"], "node id", MAX_NAME_CHARS + 10)
                kg.g.add_node(
                    nid,
                    name=_check_text(nd["name"], "entity name", MAX_NAME_CHARS),
                    aliases={str(a) for a in nd["aliases"]},
                    docs={str(x) for x in nd["docs"]},
                )
                for a in nd["aliases"]:
                    kg._alias[str(a)] = nid
            for ed in data["edges"]:
                s, r, o = str(ed["s"]), str(ed["r"]), str(ed["o"])
                if s not in kg.g or o not in kg.g:
                    raise GraphError(f"{source}: fact refers to an unknown entity {s!r}/{o!r}")
                kg.g.add_edge(s, o, key=r, relation=r, docs={str(x) for x in ed["docs"]})
            for k, v in dict(data.get("alias_docs", {})).items():
                kg._alias_docs[str(k)] = {str(x) for x in v}
        except GraphError as exc:
            if str(exc).startswith(source):
                raise
            raise GraphError(f"{source}: malformed graph file ({exc})") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GraphError(
                f"{source}: malformed graph file ({type(exc).__name__}: {exc})"
            ) from exc
        return kg

    @classmethod
    def load(cls, path: Path) -> KnowledgeGraph:
        """Read a graph saved by :meth:`save`; an empty graph if ``path`` does not exist."""
        path = Path(path)
        if not path.exists():
            kg = cls()
            kg._path = path
            return kg
        if not path.is_file():
            raise GraphError(f"graph path {path} is not a regular file")
        size = path.stat().st_size
        if size > MAX_GRAPH_BYTES:
            raise GraphError(f"graph file {path.name} is {size} bytes, over the limit")
        raw = path.read_bytes()
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GraphError(f"graph file {path.name} is not valid JSON: {exc}") from exc
        kg = cls.from_json(data, source=path.name)
        kg._path = path
        return kg

    def save(self, path: Path) -> None:
        """Write JSON atomically (temp file, fsync, ``os.replace``, fsync of the directory)."""
        path = Path(path)
        with self._lock:
            payload = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
            atomic_write(path, payload.encode("utf-8"))
            if self._emb_cache is not None and self._emb_cache[0] == self._version:
                _, nodes, mat = self._emb_cache
                _save_embeddings(_emb_path(path), self._entity_texts(nodes), mat)
            self._path = path

    # -- linking -----------------------------------------------------------------------
    def entity_embeddings(self, embedder) -> tuple[list[str], np.ndarray]:
        """Node ids and ``(n, dim)`` unit vectors of entity names, cached and persisted."""
        with self._lock:
            if self._emb_cache is not None and self._emb_cache[0] == self._version:
                return self._emb_cache[1], self._emb_cache[2]
            nodes = list(self.g.nodes)
            names = self._entity_texts(nodes)
            mat = None
            if self._path is not None:
                mat = _load_embeddings(_emb_path(self._path), names)
            if mat is None:
                mat = (
                    embedder.encode(names)
                    if names
                    else np.zeros((0, getattr(embedder, "dim", 384)), np.float32)
                )
            self._emb_cache = (self._version, nodes, np.ascontiguousarray(mat, dtype=np.float32))
            return nodes, self._emb_cache[2]

    def _entity_texts(self, nodes: list[str]) -> list[str]:
        from knowledge.kgqa_data import entity_text

        return [entity_text(self.g.nodes[n]["name"]) for n in nodes]

    def _trigram_index(self) -> dict[str, set[str]]:
        if self._trigrams is None or self._trigrams[0] != self._version:
            idx: dict[str, set[str]] = defaultdict(set)
            for key in self._alias:
                for tg in _grams(key):
                    idx[tg].add(key)
            self._trigrams = (self._version, idx)
        return self._trigrams[1]

    def _attribute_words(self) -> frozenset[str]:
        """Relation names as words ("price", "made by", "cost"): what a question asks for."""
        if self._attributes is None or self._attributes[0] != self._version:
            rels = {k for _, _, k in self.g.edges(keys=True)} | set(_RELATION_GLOSS)
            words = frozenset(normalize(r) for r in rels if r not in _LINKING_RELATIONS)
            self._attributes = (self._version, words)
        return self._attributes[1]

    def link(self, text: str, embedder=None) -> list[tuple[str, float]]:
        """Entities named in ``text`` as ``(display name, score)``, best first.

        Scores: 1.0 for an exact alias match (``[bracketed]`` spans first), the difflib ratio
        (>= 0.8) for a fuzzy match, and 0.9 x cosine (>= 0.45) for an embedding match (only
        tried when nothing matched exactly, which keeps a turn to one encoder call). Words
        that name a relation ("price", "cost", "warranty") are never linked outside brackets:
        they say what is asked, and "how much does it cost?" must leave "it" to the context.
        """
        if not isinstance(text, str) or not text.strip():
            return []
        text = text[:2000]
        found: dict[str, float] = {}
        with self._lock:
            if not self._alias:
                return []
            for span in re.findall(r"\[([^\[\]]{1,300})\]", text):
                node = self.resolve(span)
                if node is not None:
                    found[node] = 1.01
            toks = normalize(text).split()
            covered = [False] * len(toks)
            attributes = self._attribute_words()
            asked = [False] * len(toks)  # tokens that name a relation
            for n in range(min(8, len(toks)), 0, -1):
                for i in range(len(toks) - n + 1):
                    if any(covered[i : i + n]):
                        continue
                    gram = " ".join(toks[i : i + n])
                    if n == 1 and gram in _STOP:
                        continue
                    if n <= 3 and gram in attributes:
                        # "how much does it cost?": the word names what is asked (a relation),
                        # not what it is asked about, even where a document made it a node
                        covered[i : i + n] = [True] * n
                        asked[i : i + n] = [True] * n
                        continue
                    node = self._alias.get(gram)
                    if node is not None:
                        found[node] = max(found.get(node, 0.0), 1.0)
                        covered[i : i + n] = [True] * n
            self._fuzzy(toks, covered, found)
            exact = any(v >= 1.0 for v in found.values())
            if embedder is not None and self.g.number_of_nodes() and not exact:
                self._embedding_link(text, toks, embedder, found, asked)
            ranked = sorted(found.items(), key=lambda kv: -kv[1])[:10]
            return [(self.g.nodes[n]["name"], round(min(s, 1.0), 4)) for n, s in ranked]

    def _fuzzy(self, toks: list[str], covered: list[bool], found: dict[str, float]) -> None:
        idx = self._trigram_index()
        for n in range(min(5, len(toks)), 0, -1):
            for i in range(len(toks) - n + 1):
                if any(covered[i : i + n]):
                    continue
                words = toks[i : i + n]
                if words[0] in _STOP or words[-1] in _STOP:
                    continue
                gram = " ".join(words)
                if len(gram) < 4:
                    continue
                counts: dict[str, int] = defaultdict(int)
                grams = _grams(gram)
                for tg in grams:
                    for key in idx.get(tg, ()):
                        counts[key] += 1
                if not counts:
                    continue
                best = sorted(counts.items(), key=lambda kv: -kv[1])[:20]
                for key, c in best:
                    if c < 0.4 * len(grams):
                        continue
                    if abs(len(key) - len(gram)) > max(1, len(key) // 5):
                        continue  # a typo keeps the length; "long" is not "oolong"
                    ratio = difflib.SequenceMatcher(None, gram, key).ratio()
                    if ratio >= 0.8:
                        node = self._alias[key]
                        found[node] = max(found.get(node, 0.0), 0.99 * ratio)

    def _embedding_link(
        self, text: str, toks: list[str], embedder, found: dict[str, float], asked: list[bool]
    ) -> None:
        rest = [t for t, a in zip(toks, asked, strict=True) if not a and t not in _STOP]
        if not rest and any(asked):
            return  # "how much does it cost?" names only what is asked, nothing to link
        nodes, mat = self.entity_embeddings(embedder)
        if mat.shape[0] == 0:
            return
        content = " ".join(rest) or text
        q = embedder.encode([text, content])
        sims = (mat @ q.T).max(axis=1)
        attributes = self._attribute_words()
        top = np.argsort(-sims)[:5]
        for j in top:
            s = float(sims[j])
            node = nodes[int(j)]
            if s >= 0.45 and not (self.g.nodes[node]["aliases"] & attributes):
                found[node] = max(found.get(node, 0.0), 0.9 * s)


def _grams(s: str) -> set[str]:
    p = f"  {s} "
    return {p[i : i + 3] for i in range(len(p) - 2)}


def _emb_path(path: Path) -> Path:
    return path.with_name(path.stem + ".entities.safetensors")


def _names_hash(names: list[str]) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode("utf-8", "replace") + b"\x00")
    return h.hexdigest()


def _save_embeddings(path: Path, names: list[str], mat: np.ndarray) -> None:
    from safetensors.numpy import save

    blob = save({"embeddings": np.ascontiguousarray(mat)}, metadata={"names": _names_hash(names)})
    atomic_write(path, blob)


def _load_embeddings(path: Path, names: list[str]) -> np.ndarray | None:
    """Cached vectors if the file exists and was made for exactly these names."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            if (f.metadata() or {}).get("names") != _names_hash(names):
                return None
            mat = f.get_tensor("embeddings")
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    if mat.ndim != 2 or mat.shape[0] != len(names):
        return None
    return mat.astype(np.float32)


def read_triples_file(path: str | Path) -> list[tuple[str, str, str]]:
    """Triples from a TSV (``subject<TAB>relation<TAB>object``) or ``a|b|c`` file."""
    from knowledge.kgqa_data import KGQADataError, read_kb

    try:
        return read_kb(path)
    except KGQADataError as exc:
        raise GraphError(str(exc)) from exc
