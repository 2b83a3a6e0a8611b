"""What the assistant says when no skill fits: an honest "I can't do that", and what it can do."""

from __future__ import annotations

from collections.abc import Iterator

from skills.base import Reply, Services, Skill, SkillRequest


class FallbackSkill(Skill):
    name = "fallback"
    description = (
        "Answers messages that no other skill can handle by saying what the assistant can do."
    )
    routable = False

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        caps = services.capabilities or []
        text = "Sorry, I can't help with that."
        if caps:
            text += " Here is what I can do: " + "; ".join(caps) + "."
        text += " You can also ask for a person from our team."
        yield text
        yield self.reply(text, confidence=request.confidence, data={"offer_handoff": True})
