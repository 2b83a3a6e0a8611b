import pytest

from assistant import slots


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("translate that into German", "de"),
        ("auf Deutsch bitte", "de"),
        ("in French please", "fr"),
        ("translate it to spanish", "es"),
        ("say hello", None),
    ],
)
def test_target_language(text, lang):
    assert slots.target_language(text) == lang


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("summarize the refund policy in two sentences", "sentences:2"),
        ("summarize that in 1 sentence", "sentences:1"),
        ("give me a 50 word summary", "words:50"),
        ("summarize it to 20%", "ratio:0.20"),
        ("a short summary please", "sentences:2"),
        ("summarize it", None),
    ],
)
def test_summary_length(text, spec):
    assert slots.summary_length(text) == spec


def test_document_name():
    names = ["refund-policy.md", "shipping-and-delivery.md", "warranty.md", "faq.csv"]
    assert slots.document_name("summarize the refund policy", names) == "refund-policy.md"
    assert (
        slots.document_name("what does the shipping document say", names)
        == "shipping-and-delivery.md"
    )
    assert slots.document_name("summarize the warranty.md file", names) == "warranty.md"
    assert slots.document_name("summarize our conversation", names) is None
    # titles count as names; the fuller match wins over a shorter name it contains
    names = ["garden.md", "notes.txt", "Greenhouse notes"]
    assert slots.document_name("summarize the greenhouse notes", names) == "Greenhouse notes"
    assert slots.document_name("summarize my greenhouse notes please", names) == (
        "Greenhouse notes"
    )
    assert slots.document_name("summarize notes.txt", names) == "notes.txt"


@pytest.mark.parametrize(
    ("text", "last_skill", "skill", "kind"),
    [
        ("summarize that", "qa", "summarize", "last_reply"),
        ("translate it into German", "qa", "translate", "last_reply"),
        ("tell me more", "qa", "qa", "last_user_text"),
        ("and in French?", "translate", "translate", "translate_source"),
        ("summarize our conversation", "qa", "summarize", "conversation"),
        ("translate what I said into German", "qa", "translate", "last_user_text"),
        ("summarize that document", "qa", "summarize", "last_document"),
    ],
)
def test_follow_ups(text, last_skill, skill, kind):
    fu = slots.follow_up(text, last_skill, has_history=True)
    assert fu is not None
    assert (fu.skill, fu.referent_kind) == (skill, kind)


def test_no_follow_up_without_history_or_for_new_text():
    assert slots.follow_up("summarize that", "qa", has_history=False) is None
    assert slots.follow_up("translate 'where is my parcel' into German", "qa", True) is None
    assert slots.follow_up("and in French?", "qa", True) is None


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("summarize it half as long", "ratio:0.50"),
        ("a third as long please", "ratio:0.33"),
        ("cut it to a quarter", "ratio:0.25"),
        ("give me a long summary", "sentences:6"),
    ],
)
def test_summary_length_fractions(text, length):
    from assistant.slots import summary_length

    assert summary_length(text) == length
