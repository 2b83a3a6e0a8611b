"""Greetings, thanks, goodbyes and "who are you": short replies built from the bot's config.

These are fixed sentences on purpose (a greeting needs no model), and they say what the
assistant can do, taken from the registered skills, so they stay true as skills change.
"""

from __future__ import annotations

from collections.abc import Iterator

from skills.base import Reply, Services, Skill, SkillRequest


class SmalltalkSkill(Skill):
    name = "smalltalk"
    description = "Greetings, thanks, goodbyes and questions about the assistant itself."
    examples = [
        "hi",
        "hello there",
        "good morning",
        "thanks a lot",
        "thank you",
        "bye",
        "see you later",
        "who are you",
        "are you a bot",
        "what can you do",
    ]

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        cfg = services.config
        name = getattr(cfg, "name", "the assistant")
        greeting = getattr(cfg, "greeting", "Hi! How can I help?")
        intent = request.intent
        low = request.text.lower()
        if intent in {"thanks", "thank_you"} or "thank" in low or "cheers" in low:
            text = "You're welcome! Is there anything else I can help with?"
        elif intent in {"goodbye", "bye"} or any(w in low for w in ("bye", "see you", "later")):
            text = "Goodbye, and thanks for chatting with us!"
        elif intent in {"bot_identity", "capabilities"} or any(
            w in low for w in ("who are you", "what are you", "bot", "what can you", "help")
        ):
            caps = "; ".join(services.capabilities) if services.capabilities else ""
            text = f"I'm {name}, an assistant that runs locally."
            if caps:
                text += f" I can help with: {caps}."
        else:
            text = greeting
        yield text
        yield self.reply(text, confidence=request.confidence)
