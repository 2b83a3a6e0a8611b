"""PII redaction: canaries (incl. encodings), what must survive, properties, logging, config."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from assistant.errors import ConfigError
from assistant.pii import (
    PIIConfig,
    RedactingFilter,
    find_pii,
    iban_valid,
    install_logging_filter,
    luhn_valid,
    redact,
    redact_obj,
)

EVAL = Path(__file__).resolve().parents[2] / "assistant" / "demo" / "eval"

# -- canaries: each must be gone from the output, whatever its encoding ----------------------
CANARIES = {
    "email": [
        "canary.jones@example.com",
        "CANARY+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "canary%40example.com",  # URL-encoded @, as in an access-log query string
        "ｃａｎａｒｙ＠ｅｘａｍｐｌｅ．ｃｏｍ",  # full-width
        "can\u200bary@exa\u200dmple.com",  # zero-width space / joiner inside
    ],
    "card": [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",
        "30569309025904",
        "６０１１ １１１１ １１１１ １１１７",  # full-width digits
        "4242\u200b4242\u200b4242\u200b4242",
        "5555-5555-5555-4444",
    ],
    "iban": [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "gb82 west 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "CH9300762011623852957",
    ],
    "phone": [
        "+44 20 7946 0958",
        "+1-555-0100",
        "+1 (555) 123-4567",
        "+44 (0)20 7946 0958",
        "0044 20 7946 0958",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "020 7946 0958",
        "07700 900123",
        "+４４ ２０ ７９４６ ０９５８",
    ],
}


@pytest.mark.parametrize(
    ("kind", "value"), [(k, v) for k, vs in CANARIES.items() for v in vs], ids=repr
)
def test_canary_is_redacted(kind, value):
    for template in ("{}", "my details: {}.", "({}) thanks", "x\n{}\ny"):
        out = redact(template.format(value))
        assert value not in out
        assert f"[{kind}]" in out, out
        # nothing of the number survives in any form
        assert not re.search(r"\d{4}", out.replace("[", "").replace("]", "")), out


MUST_SURVIVE = [
    "Order JH-482913 placed on 2024-03-18 for $149.95.",
    "Delivered 12/03/2024 at 10:30, order 1029384756.",
    "Card number 1234 5678 9012 3456 (not Luhn-valid) on the form.",
    "Refund to NL91 ABNA 0417 1643 01 (bad check digits)?",
    "Tracking 1Z999AA10123456784, parcel 00340434161234567890.",
    "The Ferrow Dutch Oven costs $1,299.00 and weighs 6.2 kg.",
    "Version 2.4.1, invoice 2024-0042, 30% off until 31.12.2024.",
    "My card ends in 4242. Room 101, postcode SW1A 1AA.",
    "Call between 9-5 on weekdays; sort code 12-34-56.",
    "Email me at maria at example dot com",  # obfuscated: documented miss, left alone
]


@pytest.mark.parametrize("text", MUST_SURVIVE)
def test_non_pii_is_left_alone(text):
    assert redact(text) == text
    assert find_pii(text) == []


def test_kinds_and_order_of_matches():
    text = "jo@example.com, +44 20 7946 0958, 4111 1111 1111 1111, DE89 3704 0044 0532 0130 00"
    found = find_pii(text)
    assert [m.kind for m in found] == ["email", "phone", "card", "iban"]
    assert all(text[m.start : m.end] == m.text for m in found)
    assert redact(text) == "[email], [phone], [card], [iban]"


def test_checksums():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert not luhn_valid("") and not luhn_valid("4111 1111")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("DE89 3704 0044 0532 0130 0")  # wrong length for DE


def test_iban_does_not_swallow_following_word():
    assert redact("GB82 WEST 1234 5698 7654 32 THEN OK") == "[iban] THEN OK"


# -- configuration --------------------------------------------------------------------------
def test_config_selects_kinds_and_adds_patterns():
    cfg = PIIConfig(phone=False, extra={"customer_id": r"CUST-\d{6}"})
    out = redact("CUST-123456 at +44 20 7946 0958, jo@example.com", cfg)
    assert out == "[customer_id] at +44 20 7946 0958, [email]"
    assert redact(out, cfg) == out


@pytest.mark.parametrize(
    "extra",
    [{"id": "("}, {"Bad Label": "x"}, {"email": "x"}, {"empty": "a*"}],
)
def test_bad_config_is_one_line_error(extra):
    with pytest.raises(ConfigError) as info:
        PIIConfig.build(extra=extra)
    assert "\n" not in str(info.value) and str(info.value).startswith("pii:")


def test_custom_pattern_never_eats_placeholders():
    cfg = PIIConfig(extra={"word": r"[a-z]+"})
    out = redact("hello jo@example.com", cfg)
    assert out == "[word] [email]"
    assert redact(out, cfg) == out


# -- redact_obj -------------------------------------------------------------------------------
def test_redact_obj_walks_containers_and_keeps_other_values():
    ticket = {
        "reason": "customer asked for a person",
        "turns": [
            {"user": "I'm jo@example.com", "n": 1, "confidence": 0.4, "ok": True},
            ("call +44 20 7946 0958", None),
        ],
        "tags": {"card 4111 1111 1111 1111"},
    }
    out = redact_obj(ticket)
    assert out["turns"][0] == {"user": "I'm [email]", "n": 1, "confidence": 0.4, "ok": True}
    assert out["turns"][1] == ("call [phone]", None)
    assert out["tags"] == {"card [card]"}
    assert ticket["turns"][0]["user"] == "I'm jo@example.com"  # input untouched


# -- logging ----------------------------------------------------------------------------------
@pytest.fixture
def capture():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("llmos.test.pii")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_logging_filter_redacts_message_args_and_traceback(capture):
    logger, stream = capture
    logger.info("user %s paid with %s", "jo@example.com", "4111 1111 1111 1111")
    logger.info("assembled %s@%s", "jo", "example.com")  # PII only once formatted
    logger.info("count %d for %r", 3, {"phone": "+44 20 7946 0958"})
    logger.info("plain message from canary.jones@example.com")
    try:
        raise ValueError("bad IBAN DE89 3704 0044 0532 0130 00 for jo@example.com")
    except ValueError:
        logger.exception("failed for %s", "+1-555-0100")
    text = stream.getvalue()
    for leaked in ("jo@example.com", "4111", "7946", "canary.jones", "3704", "555-0100"):
        assert leaked not in text, text
    assert "[email]" in text and "[card]" in text and "[iban]" in text and "count 3" in text
    assert "Traceback" in text and "ValueError" in text


def test_logging_filter_keeps_uvicorn_access_args():
    uvicorn_logging = pytest.importorskip("uvicorn.logging")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        uvicorn_logging.AccessFormatter(
            '%(client_addr)s "%(request_line)s" %(status_code)s', use_colors=False
        )
    )
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("uvicorn.access")
    old = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        logger.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/v1/sessions?email=jo%40example.com&phone=%2B44%2020%207946%200958",
            "1.1",
            200,
        )
    finally:
        logger.handlers, logger.propagate, _ = old
        logger.setLevel(old[2])
    line = stream.getvalue()
    assert "jo%40example.com" not in line and "7946" not in line, line
    assert "email=[email]&phone=[phone]" in line and " 200" in line, line


def test_install_logging_filter_is_idempotent():
    logger = logging.getLogger("llmos.test.install")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        install_logging_filter(loggers=["llmos.test.install"])
        install_logging_filter(loggers=["llmos.test.install"])
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


# -- measured precision/recall on the labelled sets -------------------------------------------
_GOLD = re.compile(r"\{\{(\w+):(.*?)\}\}")


def _labelled(path: Path) -> list[tuple[str, set[tuple[str, str]]]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            gold = {(m.group(1), m.group(2)) for m in _GOLD.finditer(line)}
            out.append((_GOLD.sub(lambda m: m.group(2), line), gold))
    return out


@pytest.mark.parametrize("name", ["pii.tsv", "pii_heldout.tsv"])
def test_precision_recall_on_labelled_set(name):
    tp = fp = fn = 0
    missed_hard = []
    for text, gold in _labelled(EVAL / name):
        pred = {(m.kind, m.text) for m in find_pii(text)}
        tp, fp, fn = tp + len(pred & gold), fp + len(pred - gold), fn + len(gold - pred)
        missed_hard += [g for g in gold - pred if g[0] in ("email", "card")]
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert missed_hard == []  # the gate: no email or card number is ever missed
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)


# -- properties -------------------------------------------------------------------------------
_PIIISH = st.text(alphabet="0123456789 -+().@%4abcXYZ_\u200b\uff14\uff20", max_size=60)
_ANY = st.lists(
    st.one_of(st.text(max_size=40), _PIIISH, st.sampled_from(["\ud800", "\udfff", "\udc80x"])),
    max_size=6,
).map("".join)


def _card_numbers() -> st.SearchStrategy[str]:
    def finish(body: list[int]) -> str:
        # append the Luhn check digit to a body whose first digit is 1-9
        digits = [*body, 0]
        total = 0
        for i, d in enumerate(reversed(digits)):
            if i % 2:
                d = d * 2 - 9 if d * 2 > 9 else d * 2
            total += d
        digits[-1] = (10 - total % 10) % 10
        return "".join(map(str, digits))

    body = st.lists(st.integers(0, 9), min_size=12, max_size=18).filter(lambda b: b[0] != 0)
    return body.map(finish)


@st.composite
def _formatted_card(draw: st.DrawFn) -> str:
    number = draw(_card_numbers())
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep:
        return number
    size = draw(st.sampled_from([4, 5, 6]))
    return sep.join(number[i : i + size] for i in range(0, len(number), size))


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_ANY)
def test_redact_is_idempotent_and_never_raises(text):
    once = redact(text)
    assert redact(once) == once
    redact_obj({"k": [text, (text,)]})


@_SETTINGS
@given(st.text(alphabet=st.characters(exclude_characters="0123456789@%\uff20"), max_size=80))
def test_text_without_digits_or_at_is_unchanged(text):
    if any(c.isdigit() for c in text):  # other scripts' digits normalise to 0-9
        return
    assert redact(text) == text


@_SETTINGS
@given(_ANY, _formatted_card(), _ANY)
def test_no_luhn_valid_card_survives(before, card, after):
    assert luhn_valid(card.replace(" ", "").replace("-", ""))
    out = redact(f"{before} card: {card} thanks {after}")
    assert card not in out


@_SETTINGS
@given(_ANY, st.emails(), _ANY)
def test_no_valid_email_survives(before, email, after):
    # documented limit (assistant/pii.py): "/", "=" and "?" in the local part are not matched,
    # so that "?email=jo@example.com" in a URL loses the address, not the URL before it
    assume(not set(email.split("@")[0]) & set("/=?"))
    out = redact(f"{before} mail {email} now {after}")
    assert email not in out
