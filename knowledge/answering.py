"""Answer a question from FAQ items, the knowledge graph and passages, with citations.

Order of trust: a FAQ answer (returned verbatim) when the question matches a FAQ question
well; else a graph answer (with its path) when the reasoner is confident; else the best
sentence(s) of the best passage, extracted verbatim. Anything weaker is ``found=False``
so the skill can say it does not know and offer a human.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from knowledge.fusion import best_sentences, guess_entities, has_pronoun

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
    if ctx_entities and has_pronoun(question) and not own:
        used = ctx_entities[:1]  # the topic of the last answer; more entities blur the query
        query = " ".join(used) + " " + question
    data: dict[str, Any] = {"query": query, "entities": list(dict.fromkeys(own + used))}
    if kb.index.ntotal == 0 and reasoner is None:
        return Answer("", [], 0.0, False, "none", data)

    qvec = kb._encode([query])[0]
    cands = kb.candidates(query, qvec, 20) if kb.index.ntotal else []
    faq = next((c for c in cands if c["kind"] == "faq"), None)
    passage = next((c for c in cands if c["kind"] == "passage"), None)
    data["suggestions"] = [_passage(c).citation.title for c in cands[:3]]

    # A follow-up about a known entity ("who makes it?") asks for one of its facts: the graph
    # answers that better than a FAQ entry that merely mentions the entity.
    graph = _graph_answer(reasoner, query, used) if used else None
    follow_up = graph is not None and graph.score >= th.graph
    # An attribute of a named entity ("what is the warranty on the Lumo kettle?") is a graph
    # fact; a FAQ entry that only mentions the entity loses to it unless it is a paraphrase.
    faq_score = faq["score"] if faq is not None else 0.0
    if graph is None and own and th.faq <= faq_score < _FAQ_PARAPHRASE:
        graph = _graph_answer(reasoner, query, own)
        follow_up = graph is not None and graph.score >= max(th.graph + 0.1, faq_score - 0.05)
    if faq is not None and faq["score"] >= th.faq and not follow_up:
        cit = _passage(faq).citation
        data["entities"] = _merge(data["entities"], guess_entities(faq["question"]))
        return Answer(faq["answer"], [cit], _conf(faq["score"], th.faq), True, "faq", data)
    if graph is None:
        graph = _graph_answer(reasoner, query, own)  # only when the FAQ has no answer
    if graph is not None and graph.score >= th.graph:
        cit = Citation("graph", " ".join(graph.path) or graph.entity, "", score=graph.score,
                       path=list(graph.path))  # fmt: skip
        cits = [cit, *_doc_citations(kb, graph.doc_ids)]
        data["entities"] = _merge(data["entities"], [graph.entity])
        data["graph_path"] = list(graph.path)
        return Answer(graph.entity, cits, float(min(1.0, graph.score)), True, "graph", data)
    # The best sentence may sit in the second or third passage (a price in a spec table
    # rather than the product's opening paragraph): pick across the top passages.
    picks = []
    top = passage["score"] if passage is not None else 0.0
    for cand in [c for c in cands if c["kind"] == "passage"][:3]:
        if cand["score"] < th.passage:
            break
        a, b, s = best_sentences(qvec, cand["text"], kb._encode, question=query)
        picks.append((s + 0.5 * (cand["score"] - top), a, b, s, cand))
    if picks:
        _, a, b, s, passage = max(picks, key=lambda p: p[0])
        if s >= th.sentence:
            cit = _passage(passage).citation
            if passage["start"] is not None:
                cit.span = (passage["start"] + a, passage["start"] + b)
            text = passage["text"][a:b]
            cit.snippet = text
            data["entities"] = _merge(data["entities"], guess_entities(text)[:3])
            data["passage"] = passage["text"]
            conf = _conf(passage["score"], th.passage)
            return Answer(text, [cit], conf, True, "passage", data)
    if faq is not None and faq["score"] >= th.faq_weak:
        cit = _passage(faq).citation
        data["entities"] = _merge(data["entities"], guess_entities(faq["question"]))
        return Answer(faq["answer"], [cit], _conf(faq["score"], th.faq_weak), True,
                      "faq", data)  # fmt: skip
    best = max([c["score"] for c in cands[:1]] + [0.0])
    return Answer("", [], float(max(0.0, min(1.0, best))), False, "none", data)


#: A FAQ question this similar to the user's is a paraphrase: its answer beats a graph fact.
_FAQ_PARAPHRASE = 0.8


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
