"""An example third-party llmos skill.

It answers "what's the weather in Paris?" from ``forecasts.json`` shipped beside it (sample
data, so the example works offline; a real skill would call a weather service here). The
``[project.entry-points."llmos.skills"]`` table in its pyproject.toml is all llmos needs to
find it: ``pip install ./examples/weather_skill`` and the router learns its examples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from skills import Reply, Services, Skill, SkillRequest, Slot, Source

_DATA = Path(__file__).with_name("forecasts.json")


class WeatherSkill(Skill):
    name = "weather"
    description = "Tells the weather forecast for a city."
    examples = [
        "what's the weather in Paris",
        "will it rain tomorrow in Berlin",
        "weather forecast for London",
        "how hot is it in Madrid today",
        "is it going to be sunny in Rome",
        "do I need an umbrella in Oslo",
    ]
    slots = [Slot("city", "Which city?", required=False)]

    def setup(self, services: Services) -> None:
        self.forecasts = json.loads(_DATA.read_text(encoding="utf-8"))

    def handle(self, request: SkillRequest, services: Services) -> Iterator[str | Reply]:
        city = request.slots.get("city") or self._city(request.text)
        if city is None:
            text = "Which city? I have forecasts for " + ", ".join(sorted(self.forecasts)) + "."
            yield text
            yield self.reply(text, confidence=request.confidence)
            return
        f = self.forecasts[city]
        text = f"{city}: {f['summary']}, {f['low']}–{f['high']} °C, chance of rain {f['rain']}%."
        yield text
        yield self.reply(
            text,
            confidence=request.confidence,
            sources=[Source(kind="document", title="forecasts.json (sample data)", ref=str(_DATA))],
            data={"city": city},
        )

    def _city(self, text: str) -> str | None:
        for city in self.forecasts:
            if re.search(rf"\b{re.escape(city)}\b", text, re.IGNORECASE):
                return city
        return None
