"""The translation skill with a locally trained model: the phrasebook first, then the model."""

import pytest
import torch

from assistant import Assistant
from skills.base import Reply, Services, SkillRequest
from skills.quality import degenerate
from skills.translate import TranslateSkill


def test_chat_translates_with_a_model_trained_from_the_tui_path(demo_copy, embedder):
    torch.set_num_threads(1)
    bot = Assistant.from_project(
        demo_copy, embedder=embedder, entry_points=False, knowledge=False, language_model=False
    )
    try:
        sid = bot.new_session()
        before = bot.chat(
            "translate 'the blue lamp will ship from Fernhill on monday' into French", sid
        )
        assert before.data["method"] == "none" and "llmos train translator" in before.text
        out = bot.train_translator(
            [demo_copy / "translation" / "phrasebook.tsv"], "en", "fr",
            time_budget_s=None, preset="tiny", steps=60, learning_rate=5e-3,
        )  # fmt: skip
        assert (out / "best").is_dir() and bot.services.translator.supports("en", "fr")
        r = bot.chat("translate 'the blue lamp will ship from Fernhill on monday' into French", sid)
        # 60 steps of the tiny preset write babble ("Veuillelelele…"): the chat says the model
        # is not ready and how to train it on, instead of passing the babble off as French.
        assert r.skill == "translate" and r.data["model"].startswith("translator-en-fr"), r.data
        assert r.data["method"] == "none" and r.data["unusable"], r.data
        assert "not ready" in r.text and "--resume" in r.text and r.data["unusable"] not in r.text
        # a phrasebook sentence still comes from the translation memory, not the model
        tm = bot.chat("translate 'thank you for your order' into French", sid)
        assert tm.data["method"] == "translation memory"
    finally:
        bot.close()


class FixedTranslator:
    """A model that always answers ``out``: the skill's handling of good and bad output."""

    def __init__(self, out: str):
        self.out = out

    def supports(self, src: str, tgt: str) -> bool:
        return (src, tgt) == ("en", "de")

    def name(self, src: str, tgt: str) -> str:
        return "translator-en-de"

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        return [self.out for _ in texts]


def _translate(out: str, text: str) -> tuple[list[str], Reply]:
    request = SkillRequest(text=f"translate '{text}' into German", slots={"target_language": "de"})
    chunks = list(TranslateSkill().handle(request, Services(translator=FixedTranslator(out))))
    assert isinstance(chunks[-1], Reply)
    return [c for c in chunks[:-1] if isinstance(c, str)], chunks[-1]


def test_model_translation_streams_in_words():
    pieces, r = _translate(
        "Die blaue Lampe wird am Montag verschickt.", "the blue lamp ships on monday"
    )
    assert r.data["method"] == "model" and r.text == "Die blaue Lampe wird am Montag verschickt."
    assert len(pieces) == 7 and "".join(pieces).strip() == r.text


@pytest.mark.parametrize(
    "out", ["L Luuueeeee", "s" * 80, "die die die die die die Lampe", "Lampe", ""]
)
def test_unusable_model_output_is_not_passed_off_as_a_translation(out):
    pieces, r = _translate(out, "the blue lamp will ship from our warehouse on monday morning")
    assert r.data["method"] == "none" and r.data["unusable"] == out
    assert "not ready" in r.text and "llmos train translator" in r.text and "--resume" in r.text
    assert all(out not in p for p in pieces if out)


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("Ja.", "Yes."),
        ("Die Donaudampfschifffahrtsgesellschaft fährt am Montag.", None),
        ("Merci beaucoup pour votre commande !", "Thank you very much for your order!"),
        ("Le colis arrive demain, entre 9 h et 12 h.", "The parcel arrives tomorrow, 9 to 12."),
        ("Zzz.", None),
    ],
)
def test_real_text_is_not_flagged(text, source):
    assert degenerate(text, source) is None
