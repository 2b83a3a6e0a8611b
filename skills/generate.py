"""Free-form writing with the local language model: notes, apologies, short poems.

The skill streams the model's text as it is produced and ends with one ``Reply`` that names
the model. Without a trained model it says so plainly and names the command that trains
one, rather than pretending: a small local model is the whole point of this skill.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from skills.base import Reply, Services, Skill, SkillRequest

SYSTEM_PROMPT = "You are a helpful, polite customer-service assistant. Answer briefly."
MAX_NEW_TOKENS = 160


class GenerateSkill(Skill):
    name = "generate"
    description = "Writes text on request: notes, messages, apologies, short poems and drafts."
    capability = "write short texts such as notes and apologies"
    examples: ClassVar[list[str]] = [
        "write a short apology to a customer whose parcel is late",
        "draft a thank-you note",
        "write a poem about autumn",
        "compose a message telling customers about our new opening hours",
        "write a friendly reminder email",
        "draft a short welcome message for new customers",
        "write a haiku about the sea",
        "can you write a birthday message for my colleague",
    ]

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        generator = services.generator
        if generator is None:
            text = (
                "I don't have a language model to write with yet. Train one with "
                "`llmos train lm --corpus <your texts> --project <your bot>` (the demo model "
                "may still be training; try again in a minute)."
            )
            yield text
            yield self.reply(text, confidence=request.confidence, data={"model": None})
            return
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for role, said in request.session.history[-4:]:
            if role in ("user", "assistant") and said:
                messages.append({"role": role, "content": said})
        prompt = request.text
        if request.referent and request.referent not in prompt:
            prompt = f"{prompt}\n\n{request.referent}"
        messages.append({"role": "user", "content": prompt})
        options: dict[str, Any] = {
            "max_new_tokens": MAX_NEW_TOKENS,
            "temperature": 0.7,
            "top_p": 0.9,
            "repetition_penalty": 1.1,
        }
        parts: list[str] = []
        for delta in generator.stream(messages, **options):
            parts.append(delta)
            yield delta
        text = "".join(parts).strip()
        model = getattr(generator, "name", None) or "lm"
        if not text:
            text = "I couldn't come up with anything this time; could you rephrase the request?"
            yield text
            yield self.reply(text, confidence=0.2, data={"model": model})
            return
        # A small model's writing is plausible rather than reliable: confidence reflects the
        # router's certainty, capped so the dialogue manager never treats it as an answer of fact.
        yield self.reply(text, confidence=min(request.confidence, 0.8), data={"model": model})
