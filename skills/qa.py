"""Question answering from the bot's own knowledge: FAQ, documents and the knowledge graph.

The answer is always extractive and grounded: the FAQ answer verbatim, the best sentences of
the best passage, or a graph path. When the evidence is weak the skill says it does not know
and offers a person, rather than guessing. Entities found in one answer are remembered for
the next turn, so "who makes it?" after a question about the Lumo kettle resolves "it".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from knowledge.errors import KnowledgeError
from skills.base import Reply, Services, Skill, SkillError, SkillRequest, Source


def citation_to_source(c: Any) -> Source:
    d = asdict(c) if hasattr(c, "__dataclass_fields__") else dict(c)
    return Source.from_dict(d)


class QASkill(Skill):
    name = "qa"
    description = (
        "Answers questions from the company's documents, FAQ and knowledge graph, with sources."
    )
    capability = "answer questions from our documents, with sources"
    examples = [
        "what is your refund policy",
        "how long does delivery take",
        "do you ship internationally",
        "how much does the kettle cost",
        "what does the warranty cover",
        "who makes this product",
        "where is your showroom",
        "can I pay with a gift card",
    ]

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        kb = services.knowledge
        if kb is None:
            text = (
                "I have no documents to answer from yet. Add some with "
                "`llmos ingest PATH` and ask again."
            )
            yield text
            yield self.reply(text, confidence=0.0, data={"found": False})
            return
        memory = request.session.memory.get(self.name, {}) if request.session.memory else {}
        question = request.text
        more = request.referent_kind == "last_user_text" and request.referent
        if more:
            question = str(request.referent)
        context = {
            "entities": memory.get("entities", []),
            "last_question": memory.get("last_question"),
            "last_answer": request.session.last_reply,
        }
        if more:
            try:
                passages = kb.search(question, k=6)
            except KnowledgeError as exc:
                raise SkillError(str(exc)) from None
            shown = set(memory.get("shown", []))
            fresh = [p for p in passages if _key(p.citation) not in shown]
            if not fresh:
                text = "That's everything I found on this. Would you like me to connect you with a person?"
                yield text
                yield self.reply(
                    text,
                    confidence=request.confidence,
                    data={"found": False, "offer_handoff": True},
                )
                return
            p = fresh[0]
            sources = [citation_to_source(p.citation)]
            text = p.text.strip()
            yield text
            yield self.reply(
                text,
                confidence=min(request.confidence, float(p.score)),
                sources=sources,
                data={
                    "found": True,
                    "kind": "passage",
                    "memory": {**memory, "shown": [*shown, _key(p.citation)]},
                },
            )
            return
        ans = request.extras.get("answer")
        if ans is None:
            try:
                ans = kb.answer(question, context=context)
            except KnowledgeError as exc:
                raise SkillError(str(exc)) from None
        if not ans.found:
            text = (
                "I don't know the answer to that from the documents I have. "
                "Would you like me to connect you with a person?"
            )
            yield text
            yield self.reply(
                text,
                confidence=float(ans.confidence),
                data={"found": False, "offer_handoff": True, "memory": memory},
            )
            return
        sources = [citation_to_source(c) for c in ans.citations]
        yield ans.text
        new_memory = {
            **ans.follow_up(question, memory),
            "shown": [_key(c) for c in ans.citations],
        }
        data: dict[str, Any] = {"found": True, "kind": ans.kind, "memory": new_memory}
        doc = next((s.title for s in sources if s.kind == "document"), None)
        if doc:
            data["document"] = doc
        yield self.reply(
            ans.text,
            confidence=min(float(request.confidence), float(ans.confidence))
            if request.confidence
            else float(ans.confidence),
            sources=sources,
            data=data,
        )


def _key(c: Any) -> str:
    span = getattr(c, "span", None)
    return f"{getattr(c, 'kind', '')}|{getattr(c, 'title', '')}|{span}"
