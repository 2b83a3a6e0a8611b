"""The summarizer through the real MiniLM encoder: splitting, dialogue rewriting, lengths,
every source the skill reads, bad input, a 100-page document, and the abstractive path."""

from __future__ import annotations

import random
import re
import time

import pytest

from skills.base import Reply, Services, SessionView, SkillRequest
from skills.summarize import (
    MAX_EMBED,
    SummarizeSkill,
    clean_turn,
    parse,
    ratio_from_text,
    resolve_length,
    summarize,
    third_person,
    unsupported_language,
)

ARTICLE = (
    "Juniper Home opened its first showroom in Alderbrook in 2009. The company sells kettles, "
    "grinders and bedding that it designs itself. Most items can be returned within 45 days "
    "of delivery. Returns within the US are free with a prepaid label. Refunds reach the "
    "original payment method within 5 business days. The Nimbus duvet has a 100-night sleep "
    "trial. Damaged items reported within 14 days are replaced or refunded in full. Customer "
    "service answers by phone, chat and email on weekdays. Orders over $75 ship for free. "
    "Gift cards never expire and can be used online or in the showroom."
)
DIALOGUE = """Amanda: I baked cookies. Do you want some?
Jerry: Sure!
Amanda: I'll bring you tomorrow :-)
Jerry: haha ok, thanks!"""
DIALOGSUM = """#Person1#: Hello, how are you doing today?
#Person2#: I ' ve been having trouble breathing lately.
#Person1#: Have you had any type of cold lately?
#Person2#: No, I haven ' t had a cold. I just have a heavy feeling in my chest when I try to breathe.
#Person1#: I am going to send you to a pulmonary specialist who can run tests on you for asthma.
#Person2#: Thank you for your help, doctor."""


def run(skill, request, services) -> tuple[list[str], Reply]:
    items = list(skill.handle(request, services))
    assert isinstance(items[-1], Reply)
    chunks = [i for i in items[:-1] if isinstance(i, str)]
    assert "".join(chunks) == items[-1].text  # what streams is what is stored
    return chunks, items[-1]


def sentences_of(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?…])\s+", text.strip()) if s]


# -- splitting and rewriting ------------------------------------------------------------
def test_parse_tells_dialogue_from_prose():
    d = parse(DIALOGUE)
    assert d.dialogue and d.speakers == ["Amanda", "Jerry"]
    assert [u.turn for u in d.units] == [0, 0, 1, 2, 3]  # two sentences in the first turn
    ds = parse(DIALOGSUM)
    assert ds.dialogue and ds.speakers == ["#Person1#", "#Person2#"]
    own = parse("User: how long does delivery take?\nAssistant: 3 to 5 business days.")
    assert own.dialogue and own.speakers == ["User", "Assistant"]
    prose = parse(ARTICLE)
    assert not prose.dialogue and len(prose.units) == 10
    md = parse(
        "# Prices\n\nOur kettle costs $69.\n\n| Option | Cost |\n|---|---|\n| Express | $15 |"
    )
    assert [u.text for u in md.units] == ["Our kettle costs $69."]
    # a list of "Key: value" lines is not a conversation
    spec = parse("Price: $69\nCapacity: 1.7 litres\nWarranty: 2 years\nColour: sage green")
    assert not spec.dialogue


def test_clean_turn_drops_fillers_emoji_and_laughter():
    assert clean_turn("haha ok, thanks! 😂") == ""
    assert clean_turn("Oh, well I'll bring them tomorrow :-) lol") == "I'll bring them tomorrow"
    assert clean_turn("I ' ve been having trouble") == "I've been having trouble"
    assert clean_turn("<file_photo>") == ""


def test_third_person_uses_the_speakers_names():
    assert third_person("I'll bring you some", "Amanda", "Jerry") == "Amanda will bring Jerry some"
    assert third_person("I am going to send you to a specialist", "#Person1#", "#Person2#") == (
        "#Person1# is going to send #Person2# to a specialist"
    )
    # three or more people: "you" is ambiguous and stays
    assert third_person("my car, your bike", "Tom", None) == "Tom's car, your bike"


def test_dialogue_summary_is_reported_speech(embedder):
    s = summarize(DIALOGUE, embedder)
    assert s.dialogue
    assert "Amanda" in s.text and "haha" not in s.text and ":-)" not in s.text
    assert not re.search(r"\bI\b", s.text)  # first person became a name
    ds = summarize(DIALOGSUM, embedder, "sentences:2")
    assert len(ds.units) == 2
    assert "#Person2#" in ds.text


def test_our_own_transcript_keeps_who_said_what(embedder):
    text = (
        "User: how long does delivery take to Canada?\n"
        "Assistant: Delivery to Canada takes 5 to 8 business days and costs $19.95.\n"
        "User: and can I return a kettle I bought last month?\n"
        "Assistant: Yes, unused items can be returned within 45 days of delivery."
    )
    s = summarize(text, embedder, "sentences:2")
    assert re.match(r"^(You asked|I said): ", s.text)
    assert "User:" not in s.text and "Assistant:" not in s.text


# -- length ------------------------------------------------------------------------------
def test_length_specs_and_adaptive_default():
    assert resolve_length("sentences:2", 10).sentences == 2
    w = resolve_length("words:50", 10)
    assert w.words == 50 and w.exact_words
    assert resolve_length("ratio:0.5", 10, 400).words == 200
    assert resolve_length("ratio:20%", 10, 400).words == 80
    short, medium, long_ = (
        resolve_length(None, 4),
        resolve_length(None, 30),
        resolve_length(None, 400),
    )
    assert (short.sentences, medium.sentences, long_.sentences) == (1, 3, 10)
    assert resolve_length("nonsense", 25).sentences == 3  # falls back to the default


@pytest.mark.parametrize(
    ("text", "ratio"),
    [
        ("make it half as long", 0.5),
        ("summarize it to a third", 1 / 3),
        ("a quarter of the length please", 0.25),
        ("shorten to 20%", 0.2),
        ("summarize that", None),
    ],
)
def test_ratio_phrases(text, ratio):
    spec = ratio_from_text(text)
    if ratio is None:
        assert spec is None
    else:
        assert spec is not None and abs(float(spec.split(":")[1]) - ratio) < 1e-3


def test_each_length_option_is_respected(embedder):
    two = summarize(ARTICLE, embedder, "sentences:2")
    assert len(two.units) == 2 and len(sentences_of(two.text)) == 2
    words = summarize(ARTICLE, embedder, "words:25")
    assert len(words.text.split()) <= 25
    half = summarize(ARTICLE, embedder, "ratio:0.5")
    n = len(ARTICLE.split())
    assert 0 < len(half.text.split()) <= 0.5 * n
    assert len(half.text.split()) > len(two.text.split()) - 10
    # picked sentences keep their order in the text and never repeat
    positions = [u.position for u in half.units]
    assert positions == sorted(set(positions))
    for sent in sentences_of(half.text):
        assert sent in ARTICLE


# -- the skill: every source ----------------------------------------------------------------
@pytest.fixture
def services(embedder):
    return Services(embedder=embedder)


def test_given_text_inline_and_quoted(services):
    skill = SummarizeSkill()
    _, r = run(skill, SkillRequest(text=f"summarize this in two sentences: {ARTICLE}",
                                   slots={"length": "sentences:2"}), services)  # fmt: skip
    assert r.data["of"] == "text" and r.data["method"] == "extractive"
    assert r.data["sentences"] == 2
    _, q = run(skill, SkillRequest(text=f'tl;dr "{ARTICLE}"'), services)
    assert q.data["of"] == "text" and q.text


def test_previous_reply_and_last_user_message(services):
    skill = SummarizeSkill()
    view = SessionView("s1", history=[("user", "tell me"), ("assistant", ARTICLE)],
                       last_reply=ARTICLE, last_user_text="tell me about returns")  # fmt: skip
    _, r = run(skill, SkillRequest(text="summarize that in 1 sentence", referent_kind="last_reply",
                                   slots={"length": "sentences:1"}, session=view), services)  # fmt: skip
    assert r.data["of"] == "last reply" and r.data["sentences"] == 1
    assert r.text in ARTICLE
    # "tl;dr of it" without a resolved referent still finds the last reply
    _, r2 = run(skill, SkillRequest(text="summarize it, half as long", session=view), services)
    assert r2.data["of"] == "last reply" and r2.data["length"].startswith("ratio:0.5")
    _, r3 = run(skill, SkillRequest(text="summarize what I said", referent_kind="last_user_text",
                                    session=view), services)  # fmt: skip
    assert r3.data["of"] == "your last message"


def test_current_conversation(services):
    history = [
        ("user", "how long does delivery to Canada take?"),
        ("assistant", "Delivery to Canada takes 5 to 8 business days for a flat $19.95."),
        ("user", "can I return a kettle after a month?"),
        ("assistant", "Yes. Unused items can be returned within 45 days of delivery."),
    ]
    view = SessionView("s2", history=history, last_reply=history[-1][1])
    _, r = run(SummarizeSkill(), SkillRequest(text="summarize our conversation",
                                              referent_kind="conversation", session=view), services)  # fmt: skip
    assert r.data["of"] == "conversation"
    assert r.sources and r.sources[0].kind == "session"
    assert "You asked" in r.text or "I said" in r.text


def test_nothing_to_summarize_and_empty_text(services):
    skill = SummarizeSkill()
    _, r = run(skill, SkillRequest(text="summarize"), services)
    assert r.data["needs"] == "text" and "\n" not in r.text
    view = SessionView("s3", last_reply="   ")
    _, e = run(skill, SkillRequest(text="summarize that", referent_kind="last_reply",
                                   session=view), services)  # fmt: skip
    assert e.text == "There is nothing to summarize: the last reply is empty."
    assert summarize("", services.embedder).text == ""
    assert summarize(" \n\n ", services.embedder).units == []


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Die Rückgabe ist innerhalb von 45 Tagen kostenlos. Ich habe das Paket nicht bekommen "
         "und die Bestellung ist noch nicht da. Wo ist meine Rechnung?", "German"),
        ("Возврат товара возможен в течение 45 дней после доставки. Деньги возвращаются на "
         "карту в течение пяти рабочих дней.", "Cyrillic script"),
        ("退货在交货后四十五天内免费。退款将在五个工作日内退回原付款方式。", "Chinese or Japanese script"),
    ],
)  # fmt: skip
def test_unsupported_language_is_named(services, text, language):
    assert unsupported_language(text) == language
    _, r = run(SummarizeSkill(), SkillRequest(text=f"summarize: {text}"), services)
    assert r.text == f"I can only summarize English text, and this looks like {language}."
    assert r.data["error"] == "unsupported language" and r.confidence == 0.0


def test_english_with_names_is_not_flagged():
    assert unsupported_language(ARTICLE) is None
    assert unsupported_language(DIALOGUE) is None
    assert unsupported_language("ok") is None  # too short to tell


# -- a 100-page document ---------------------------------------------------------------------
class CountingEncoder:
    """The real encoder, counting how many texts a summary asks it to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.texts = 0

    def encode(self, texts, **kw):
        self.texts += len(texts)
        return self.inner.encode(texts, **kw)


def long_document(n_words: int = 50_000, seed: int = 0) -> str:
    rng = random.Random(seed)
    nouns = ["kettle", "grinder", "duvet", "warranty", "refund", "order", "parcel", "invoice"]
    verbs = ["covers", "delays", "replaces", "ships", "returns", "inspects", "repairs"]
    adjs = ["damaged", "new", "heavy", "fragile", "express", "standard", "seasonal"]
    paras, words = [], 0
    section = 0
    while words < n_words:
        section += 1
        sents = []
        for _ in range(12):
            s = (f"The {rng.choice(adjs)} {rng.choice(nouns)} in section {section} "
                 f"{rng.choice(verbs)} the {rng.choice(adjs)} {rng.choice(nouns)} "
                 f"within {rng.randint(1, 90)} days for customer {rng.randint(1000, 9999)}.")  # fmt: skip
            sents.append(s)
            words += len(s.split())
        paras.append(f"# Section {section}\n\n" + " ".join(sents))
    return "\n\n".join(paras)


def test_a_100_page_document_is_bounded(embedder):
    doc = long_document()
    assert len(doc.split()) >= 50_000
    enc = CountingEncoder(embedder)
    seen: list[tuple[int, int]] = []
    t0 = time.perf_counter()
    s = summarize(doc, enc, progress=lambda done, total: seen.append((done, total)))
    elapsed = time.perf_counter() - t0
    print(f"\n100-page document: {s.total_units} sentences summarized in {elapsed:.1f}s")
    assert s.total_units > MAX_EMBED  # the document really is long ...
    assert enc.texts <= MAX_EMBED  # ... and only a bounded number of sentences was embedded
    assert seen[-1][0] == seen[-1][1] == enc.texts  # progress reached the end
    assert len(s.units) == 10
    # the picks come from across the document, not just its first pages
    assert max(u.position for u in s.units) > s.total_units // 3


# -- abstractive path ------------------------------------------------------------------------
class LeadWordsSummarizer:
    """A tiny real summarizer with the interface of ``lm.seq2seq.AbstractiveSummarizer``:
    it rewrites the first sentence in upper case and cuts it to ``max_words``."""

    name = "lead-words-test"

    def __init__(self):
        self.calls: list[tuple[str, int | None]] = []

    def summarize(self, text: str, max_words: int | None = None) -> str:
        self.calls.append((text, max_words))
        first = re.split(r"(?<=[.!?])\s+", text.strip())[0]
        words = first.upper().split()
        return " ".join(words[: max_words or len(words)])


class BrokenSummarizer:
    name = "broken"

    def summarize(self, text: str, max_words: int | None = None) -> str:
        raise RuntimeError("CUDA out of memory")


def test_abstractive_model_is_used_and_named(embedder):
    model = LeadWordsSummarizer()
    services = Services(embedder=embedder, summarizer=model)
    _, r = run(SummarizeSkill(), SkillRequest(text=f"summarize in 6 words: {ARTICLE}",
                                              slots={"length": "words:6"}), services)  # fmt: skip
    assert r.data["method"] == "abstractive" and r.data["model"] == "lead-words-test"
    assert model.calls == [(ARTICLE, 6)]
    assert r.text.startswith("JUNIPER HOME OPENED ITS FIRST SHOWROOM")
    assert r.text.endswith("(abstractive summary by lead-words-test)")


def test_abstractive_failure_falls_back_to_extractive(embedder):
    services = Services(embedder=embedder, summarizer=BrokenSummarizer())
    _, r = run(SummarizeSkill(), SkillRequest(text=f"summarize: {ARTICLE}"), services)
    assert r.data["method"] == "extractive"
    assert "RuntimeError" in r.data["fallback"]
    first = r.text.split("\n\n")[0]
    assert all(s in ARTICLE for s in sentences_of(first))
    assert r.text.endswith("so these are the key sentences of the text)")


class StutteringSummarizer:
    """What an undertrained model produces: one character or word over and over."""

    name = "stutter"

    def __init__(self, out: str):
        self.out = out

    def summarize(self, text: str, max_words: int | None = None) -> str:
        return self.out


@pytest.mark.parametrize("out", ["s" * 120, "the the the the the the the the kettle"])
def test_degenerate_abstractive_output_falls_back_to_extractive(embedder, out):
    services = Services(embedder=embedder, summarizer=StutteringSummarizer(out))
    _, r = run(SummarizeSkill(), SkillRequest(text=f"summarize: {ARTICLE}"), services)
    assert r.data["method"] == "extractive" and "unusable" in r.data["fallback"]
    assert out not in r.text and "summary" not in r.data
