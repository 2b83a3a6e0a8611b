"""Hand the conversation to a human: open (or reuse) a ticket and tell the user what happens next."""

from __future__ import annotations

from collections.abc import Iterator

from skills.base import Reply, Services, Skill, SkillError, SkillRequest


class HandoffSkill(Skill):
    name = "handoff"
    description = "Connects the user with a human agent."
    examples = [
        "I want to talk to a person",
        "can I speak to a human",
        "get me a real agent",
        "connect me to customer service staff",
        "I need a human, not a bot",
        "transfer me to an operator",
    ]

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        if services.handoff is None:
            raise SkillError("handing over to a person is not available in this assistant")
        reason = request.slots.get("reason") or request.text
        ticket = services.handoff(request.session.session_id, reason)
        text = (
            f"I've asked a person from our team to take over (ticket #{ticket}). "
            "They can see our conversation so far and will reply here. "
            "You can keep writing in the meantime."
        )
        yield text
        yield self.reply(text, confidence=request.confidence, data={"ticket": ticket})
