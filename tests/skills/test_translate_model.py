"""The translation skill with a locally trained model: the phrasebook first, then the model."""

import torch

from assistant import Assistant


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
        assert r.skill == "translate" and r.data["method"] == "model", r.data
        assert r.data["model"].startswith("translator-en-fr") and r.text.strip()
        # a phrasebook sentence still comes from the translation memory, not the model
        tm = bot.chat("translate 'thank you for your order' into French", sid)
        assert tm.data["method"] == "translation memory"
    finally:
        bot.close()
