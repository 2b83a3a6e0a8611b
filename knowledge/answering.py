"""Answer a question from FAQ items, the knowledge graph and passages, with citations.

Order of trust: a FAQ answer (returned verbatim) when the question matches a FAQ question
well; else a graph answer (with its path) when the reasoner is confident; else the best
sentence(s) of the best passage, extracted verbatim. Anything weaker is ``found=False``
so the skill can say it does not know and offer a human.

One exception to that order: a question about an attribute of a named entity ("how much is
the Lumo kettle?", or "how much does it cost?" with the kettle as the topic of the last
answer) often matches a FAQ entry only through the entity's name ("How do I look after my
Lumo Kettle?"). Unless that entry is a paraphrase of the question, a graph fact stated on
the entity, or a spec line of the entity's own document ("Price: $69"), answers instead,
provided the FAQ answer does not state that value itself.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from knowledge.fusion import (
    best_sentences,
    elliptical_rest,
    focus_terms,
    grounded,
    guess_entities,
    has_pronoun,
    is_fact_item,
    spec_key,
)
from knowledge.graph import normalize, relation_phrase

if TYPE_CHECKING:
    from knowledge.base import Answer, KnowledgeBase

LOG = logging.getLogger(__name__)


def _linked(reasoner: Any, text: str, min_score: float = 0.6) -> list[str]:
    if reasoner is None:
        return []
    try:
        return [e for e, s in reasoner.linked_entities(text) if s >= min_score]
    except Exception as exc:  # the graph is optional evidence; never fail the turn on it
        LOG.warning("entity linking failed: %s", exc)
        return []


def answer_question(kb: KnowledgeBase, question: str, context: dict) -> Answer:
    from knowledge.base import Answer, Citation, _passage

    th = kb.thresholds
    reasoner = kb.reasoner()
    own = _linked(reasoner, question) or guess_entities(question)
    ctx_entities = [str(e) for e in (context.get("entities") or []) if str(e).strip()]
    used: list[str] = []
    query = question
    rest = elliptical_rest(question)
    if ctx_entities and not own and (has_pronoun(question) or rest is not None):
        # "how much does it cost?", "and the warranty?", "warranty?": about the topic of the
        # last answer; more entities than that one blur the query
        used = ctx_entities[:1]
        query = f"{used[0]} {rest if rest is not None else question}"
    elif (
        ctx_entities
        and own
        and rest is not None
        and context.get("last_question")
        and not focus_terms(rest, " ".join(own))
    ):
        # "and the Brio grinder?" after "how much is the Lumo kettle?": the same question
        # about the newly named subject (not so "and the Brio's weight?", which asks more)
        query = _swap_subject(str(context["last_question"]), ctx_entities[0], own[0])
    data: dict[str, Any] = {"query": query, "entities": list(dict.fromkeys(own + used))}
    if kb.index.ntotal == 0 and reasoner is None:
        return Answer("", [], 0.0, False, "none", data)

    qvec = kb._encode([query])[0]
    cands = kb.candidates(query, qvec, 20) if kb.index.ntotal else []
    cands = _about_codes(cands, query)
    faq = next((c for c in cands if c["kind"] == "faq"), None)
    data["suggestions"] = [_passage(c).citation.title for c in cands[:3]]

    # A follow-up about a known entity ("who makes it?") asks for one of its facts: the graph
    # answers that better than a FAQ entry that merely mentions the entity.
    graph = _graph_answer(reasoner, query, used) if used else None
    follow_up = graph is not None and graph.score >= th.graph
    # An attribute of a named entity ("what is the warranty on the Lumo kettle?") is a graph
    # fact; a FAQ entry that only mentions the entity loses to it unless it is a paraphrase.
    faq_score = faq["score"] if faq is not None else 0.0
    mere_mention = bool(own or used) and th.faq <= faq_score < _FAQ_PARAPHRASE
    faq_answer = str(faq["answer"]) if faq is not None else ""
    if graph is None and own and mere_mention:
        graph = _graph_answer(reasoner, query, own)
        follow_up = graph is not None and (
            graph.score >= max(th.graph + 0.1, faq_score - 0.05)
            # "how much is the Lumo kettle?": a fact stated on the entity itself, which the
            # FAQ entry that matched on the entity's name does not state
            or (
                graph.score >= th.graph
                and _direct_fact(graph, own)
                and not _states(faq_answer, graph.entity)
            )
        )
    subjects = list(dict.fromkeys(own + used))
    picks: list[Pick] | None = None
    if follow_up and used and not _asks_for(graph, query, used):
        # "how much does it weigh?" about a grinder whose graph has no weight fact: the
        # nearest relation (its price) is not what was asked, its document's "Weight:" line
        picks = _picks(kb, cands, qvec, query, subjects)
        spec = _spec_pick(kb, picks, 0.0, "", query, subjects)
        if spec is not None:
            return _passage_answer(spec, data, th)
    if mere_mention and not follow_up:
        # ... and so does a spec line ("Price: $69") of the entity's own document
        picks = _picks(kb, cands, qvec, query, subjects)
        spec = _spec_pick(kb, picks, faq_score, faq_answer, query, subjects)
        if spec is not None:
            return _passage_answer(spec, data, th)
    if faq is not None and faq["score"] >= th.faq and not follow_up:
        cit = _passage(faq).citation
        data["entities"] = _merge(data["entities"], guess_entities(faq["question"]))
        return Answer(faq["answer"], [cit], _conf(faq["score"], th.faq), True, "faq", data)
    if graph is None:
        graph = _graph_answer(reasoner, query, own)  # only when the FAQ has no answer
    if graph is not None and graph.score >= th.graph:
        cit = Citation("graph", " ".join(graph.path) or graph.entity, "", score=graph.score,
                       path=list(graph.path))  # fmt: skip
        cits = [cit, *_supporting_passages(kb, cands, graph), *_doc_citations(kb, graph.doc_ids)]
        data["entities"] = _merge(data["entities"], [graph.entity])
        data["graph_path"] = list(graph.path)
        return Answer(graph.entity, cits, float(min(1.0, graph.score)), True, "graph", data)
    if picks is None:
        picks = _picks(kb, cands, qvec, query, subjects)
    if picks:
        best = max(picks, key=lambda p: p[0])
        if best[3] >= th.sentence and _about_it(kb, best, query, subjects, picks):
            return _passage_answer(best, data, th)
    rescued = _rescue_pick(kb, cands, qvec, query, subjects)
    if rescued is not None:
        return _passage_answer(rescued, data, th, sentence_sure=True)
    if faq is not None and faq["score"] >= th.faq_weak:
        cit = _passage(faq).citation
        data["entities"] = _merge(data["entities"], guess_entities(faq["question"]))
        return Answer(faq["answer"], [cit], _conf(faq["score"], th.faq_weak), True,
                      "faq", data)  # fmt: skip
    best = max([c["score"] for c in cands[:1]] + [0.0])
    return Answer("", [], float(max(0.0, min(1.0, best))), False, "none", data)


#: A FAQ question this similar to the user's is a paraphrase: its answer beats a graph fact.
_FAQ_PARAPHRASE = 0.8
#: A spec line read with its document's subject ("Lumo Kettle: Price: $69") scores 0.85-0.9
#: against the question it answers and 0.55-0.76 against questions about the same product's
#: other attributes (MiniLM, demo bot); above this it beats a FAQ entry that does not state it.
_SPEC_SURE = 0.8
#: Passages whose sentences are read for an answer (a spec list is often the 4th or 5th hit).
_PICK_PASSAGES = 5
#: A short note that covers several topics ("Our seed supplier is ... Orders placed before
#: Wednesday ship on Friday. The apple tree ...") is one chunk whose vector is a blur of all
#: of them: 0.33 against "when do orders ship?", below the passage threshold, while the one
#: sentence that answers scores 0.76 (0.91 with the word-overlap bonus). Such passages, down
#: to this score, are still read, and answer only through a sentence at least this sure
#: (``best_sentences``' score: the cosine plus its word-overlap bonus).
#: Measured on the demo content plus a folder of garden notes (``/tmp`` script, session 16):
#: in passages of this band, answering sentences scored 0.68-0.94 (0.75 keeps the 0.92-0.94
#: ones), 35 off-topic questions (``OFF_TOPIC`` in ``benchmarks/knowledge_faq.py`` and 15
#: more) at most 0.57, and 15 questions the notes cannot answer ("what pump does the pond
#: use?") at most 0.66, apart from a kettle's "Capacity:" line at 0.76 for "how many litres
#: does the R300 hold?", which ``_about_it`` and ``_about_codes`` turn down.
_RESCUE_FLOOR = 0.25
_SENTENCE_SURE = 0.75


Pick = tuple[float, int, int, float, dict]  # (rank score, start, end, sentence score, passage)


def _picks(kb: KnowledgeBase, cands: list[dict], qvec: Any, query: str,
           entities: list[str]) -> list[Pick]:  # fmt: skip
    """The best sentence of each top passage. The best sentence may sit in the second or
    third passage (a price in a spec list rather than the product's opening paragraph)."""
    passages = [c for c in cands if c["kind"] == "passage"][:_PICK_PASSAGES]
    if not passages:
        return []
    top = passages[0]["score"]
    out = []
    for cand in passages:
        if cand["score"] < kb.thresholds.passage:
            break
        subject = _subject(kb, cand, entities)
        a, b, s = best_sentences(qvec, cand["text"], kb._encode, question=query, subject=subject)
        out.append((s + 0.5 * (cand["score"] - top), a, b, s, cand))
    return out


#: A model number or other code ("R300", "X-200", "SKU 4411" is not one: no letter and digit
#: together). Digits with a short unit ("4K", "2pm", "5kg") are measures, not codes.
_CODE = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[^\W\d_])[^\W_][\w-]*(?<!-)")
_UNIT = re.compile(r"\d+(?:[.,]\d+)?[^\W\d_]{1,3}")


def _codes(text: str) -> set[str]:
    return {
        m.group().replace("-", "").lower()
        for m in _CODE.finditer(text)
        if not _UNIT.fullmatch(m.group())
    }


def _about_codes(cands: list[dict], question: str) -> list[dict]:
    """Only the candidates about the codes the question names. Wording alone cannot tell
    "how many litres does the R300 hold?" from "The R200 holds 200 litres", and a wrong
    model's figure is worse than "I don't know". A chunk that does not repeat the code counts
    when its document names it (file name, or another retrieved chunk of the same file)."""
    want = _codes(question)
    if not want or not cands:
        return cands

    def key(c: dict) -> tuple[str, str]:  # a FAQ entry stands alone; a file's chunks share
        return (str(c.get("path")), str(c.get("question")) if c["kind"] == "faq" else "")

    found: dict[tuple[str, str], set[str]] = {}
    for c in cands:
        text = " ".join(str(c.get(k) or "") for k in ("text", "question", "answer", "name"))
        found.setdefault(key(c), set()).update(_codes(text))
    return [c for c in cands if want <= found[key(c)]]


def _rescue_pick(
    kb: KnowledgeBase, cands: list[dict], qvec: Any, query: str, subjects: list[str]
) -> Pick | None:
    """The surest sentence of a passage that scored under the passage threshold as a whole
    (see ``_RESCUE_FLOOR``), or ``None``."""
    th = kb.thresholds.passage
    best: Pick | None = None
    for cand in [c for c in cands if c["kind"] == "passage"][:_PICK_PASSAGES]:
        if cand["score"] >= th:
            continue  # read by _picks already
        if cand["score"] < _RESCUE_FLOOR:
            break
        subject = _subject(kb, cand, subjects)
        a, b, s = best_sentences(qvec, cand["text"], kb._encode, question=query, subject=subject)
        if s >= _SENTENCE_SURE and (best is None or s > best[3]):
            best = (s, a, b, s, cand)
    if best is None or not _about_it(kb, best, query, subjects, [best]):
        return None
    return best


def _spec_pick(
    kb: KnowledgeBase,
    picks: list[Pick],
    faq_score: float,
    faq_answer: str,
    question: str,
    subjects: list[str],
) -> Pick | None:
    """A spec line that answers the question surely, unless the FAQ answer states it too."""
    if not picks:
        return None
    best = max(picks, key=lambda p: p[0])
    _, a, b, s, cand = best
    line = cand["text"][a:b]
    if not is_fact_item(cand["text"], a, b) or s < _SPEC_SURE or cand["score"] < faq_score - 0.1:
        return None
    if not _about_it(kb, best, question, subjects, picks):
        return None
    value = line.split(":", 1)[1] if spec_key(line) is not None else line
    return None if _states(faq_answer, value) else best


def _about_it(
    kb: KnowledgeBase, pick: Pick, question: str, subjects: list[str], picks: list[Pick]
) -> bool:
    """Is a picked spec line about what the question asks? "Keep-warm: 30 minutes" is not an
    answer to "how long does the kettle take to boil?", however close "how long" and "30
    minutes" are, nor is a line of another product's document when the asked-about product
    has one of its own: better no answer (and a person) than a wrong figure. Prose is not
    judged."""
    _, a, b, _, cand = pick
    if not is_fact_item(cand["text"], a, b):
        return True
    subject = _subject(kb, cand, subjects)
    if not subject and any(_subject(kb, p[4], subjects) for p in picks):
        return False
    # only the document's own subject is taken out: "Queen" in "how much is a queen size
    # Nimbus duvet?" is a node of the graph, and what the price line must mention
    return grounded(cand["text"][a:b], focus_terms(question, subject))


def _swap_subject(question: str, old: str, new: str) -> str:
    """``question`` about ``new`` instead of ``old`` ("how much is the Lumo kettle?" ->
    "how much is the Brio Grinder?"); ``new`` is put in front when ``old`` is not named."""
    words = [re.escape(w) for w in old.split()]
    pattern = re.compile(r"\b" + r"\W+".join(words) + r"\b", re.I) if words else None
    if pattern is not None and pattern.search(question):
        return pattern.sub(lambda _m: new, question, count=1)
    return f"{new} {question}"


def _passage_answer(
    pick: Pick, data: dict[str, Any], th: Any, sentence_sure: bool = False
) -> Answer:
    """``sentence_sure``: the passage was weak as a whole and one sentence carries the answer
    (``_rescue_pick``), so the confidence comes from that sentence."""
    from knowledge.base import Answer, _passage

    _, a, b, s, passage = pick
    cit = _passage(passage).citation
    if passage["start"] is not None:
        cit.span = (passage["start"] + a, passage["start"] + b)
    text = passage["text"][a:b]
    cit.snippet = text
    data["entities"] = _merge(data["entities"], guess_entities(text)[:3])
    data["passage"] = passage["text"]
    conf = _conf(s, _SENTENCE_SURE) if sentence_sure else _conf(passage["score"], th.passage)
    return Answer(text, [cit], conf, True, "passage", data)


def _subject(kb: KnowledgeBase, cand: dict, entities: list[str]) -> str:
    """The entity among ``entities`` that the passage's document is about: named by the file
    ("product-lumo-kettle.md") or by its title line ("# Lumo Kettle"); else ``""``."""
    if not entities:
        return ""
    name_words = set(normalize(re.sub(r"[-_.]", " ", str(cand.get("name") or ""))).split())
    title = ""
    try:
        rows = kb.store._query(
            "SELECT substr(text, 1, 300) FROM documents WHERE path=?", (cand["path"],)
        )
        opening = rows[0][0] if rows else ""
        title = next((ln for ln in opening.splitlines() if ln.strip()), "")
    except Exception as exc:  # the title is a hint; the file name still works
        LOG.debug("no document title for %s: %s", cand.get("path"), exc)
    title_key = f" {normalize(title)} "
    for e in entities:
        key = normalize(e)
        if key and (set(key.split()) <= name_words or f" {key} " in title_key):
            return e
    return ""


def _supporting_passages(kb: KnowledgeBase, cands: list[dict], graph: Any) -> list:
    """Citations of the retrieved passages that state the graph's answer about its topic
    ("$69" in the Lumo Kettle's own document): the reader can check the fact there."""
    from knowledge.base import _passage

    topic = graph.path[:1] if len(graph.path) == 3 else []
    out = []
    # every retrieved passage, not only the best few: "warranty" ranks the warranty policy
    # above the spec line of the product's own document, which is the one to cite
    for cand in [c for c in cands if c["kind"] == "passage"]:
        if topic and _states(cand["text"], graph.entity) and _subject(kb, cand, topic):
            out.append(_passage(cand).citation)
            break
    return out


def _asks_for(graph: Any, question: str, subjects: list[str]) -> bool:
    """Does the graph answer's last relation speak of what the question asks, in the words
    of its gloss ("who designed it?" and ``designed_by``)? Paraphrases the graph reasoner
    maps well ("who acted in it?" and ``starred_actors``) fail this too, so it only decides
    between the graph and a spec line that does speak of it."""
    rel = str(graph.path[-2]).strip("-<>") if len(graph.path) >= 3 else ""  # "-made_by->"
    return grounded(relation_phrase(rel), focus_terms(question, " ".join(subjects)))


def _direct_fact(graph: Any, entities: list[str]) -> bool:
    """Is the graph answer one fact stated on one of ``entities`` (a one-hop path)?"""
    keys = {normalize(e) for e in entities}
    return len(graph.path) == 3 and normalize(graph.path[0]) in keys


def _states(text: str, value: str) -> bool:
    """Does ``text`` state ``value`` ("$69", "2 years"), ignoring case, spacing and markup?"""
    v = _words(value)
    return bool(v) and f" {v} " in f" {_words(text)} "


def _words(s: str) -> str:
    return " ".join(re.findall(r"[^\W_]+(?:[.,]\d+)*", s.lower()))


def _merge(a: list[str], b: list[str]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def _conf(score: float, threshold: float) -> float:
    # Map [threshold, 1] onto [0.5, 1]: at the threshold we are as likely right as wrong.
    return float(np.clip(0.5 + 0.5 * (score - threshold) / max(1e-6, 1 - threshold), 0, 1))


def _graph_answer(reasoner: Any, question: str, entities: list[str]) -> Any:
    if reasoner is None:
        return None
    try:
        answers = reasoner.answer(question, context_entities=entities or None, k=3)
    except Exception as exc:
        LOG.warning("graph reasoning failed: %s", exc)
        return None
    return answers[0] if answers else None


def _doc_citations(kb: KnowledgeBase, doc_ids: list[str]) -> list:
    from knowledge.base import Citation

    out = []
    for key in list(dict.fromkeys(doc_ids))[:3]:
        row = kb.store.get_document(str(key))
        if row is not None:
            out.append(Citation("document", row["name"], row["path"]))
    return out
