"""Pair files: every format reads, every malformed file is one PairFileError naming file:line."""

import gzip
import json

import pytest

from lm.errors import DataError, PairFileError
from lm.seq2seq_data import filter_pairs, read_pairs
from tests.lm.conftest import REPO

PHRASEBOOK = REPO / "assistant" / "demo" / "translation" / "phrasebook.tsv"


def _one_line(exc: Exception) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


def test_header_tsv_picks_columns_by_language():
    de = read_pairs([PHRASEBOOK], "en", "de")
    fr = read_pairs([PHRASEBOOK], "en", "fr")
    assert de[0] == ("Hello!", "Hallo!") and fr[0] == ("Hello!", "Bonjour !")
    assert len(de) == len(fr) == 73


def test_header_without_the_wanted_language(tmp_path):
    with pytest.raises(PairFileError, match=r"phrasebook.tsv:1: .*columns en, de, fr.*'es'"):
        read_pairs([PHRASEBOOK], "en", "es")


def test_plain_two_column_tsv_and_blank_lines(tmp_path):
    p = tmp_path / "p.tsv"
    p.write_text("a cat\teine Katze\n\nthe dog\tder Hund\n", encoding="utf-8")
    assert read_pairs([p], "en", "de") == [("a cat", "eine Katze"), ("the dog", "der Hund")]


def test_malformed_tsv_line_names_its_line(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("a cat\teine Katze\nthe dog der Hund\nx\ty\n", encoding="utf-8")
    with pytest.raises(PairFileError, match=r"pairs.tsv:2: expected 2 tab-separated columns") as e:
        read_pairs([p], "en", "de")
    assert "tab" in _one_line(e.value)
    p.write_text("a\tb\n\tleer\n", encoding="utf-8")
    with pytest.raises(PairFileError, match=r"pairs.tsv:2: the source text is empty"):
        read_pairs([p], "en", "de")


def test_parallel_files_by_prefix_or_either_file_gz(tmp_path):
    for lang, lines in (("en", ["A man.", "Two dogs."]), ("de", ["Ein Mann.", "Zwei Hunde."])):
        (tmp_path / f"train.{lang}.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    want = [("A man.", "Ein Mann."), ("Two dogs.", "Zwei Hunde.")]
    assert read_pairs([tmp_path / "train"], "en", "de") == want
    assert read_pairs([tmp_path / "train.de.gz"], "en", "de") == want
    # both files given: read once, not twice
    assert read_pairs([tmp_path / "train.en.gz", tmp_path / "train.de.gz"], "en", "de") == want
    assert read_pairs([tmp_path / "train"], "de", "en")[0] == ("Ein Mann.", "A man.")


def test_parallel_files_with_different_line_counts(tmp_path):
    (tmp_path / "c.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "c.de").write_text("eins\nzwei\n")
    with pytest.raises(PairFileError, match=r"c.en has 3 lines but .*c.de has 2") as e:
        read_pairs([tmp_path / "c"], "en", "de")
    _one_line(e.value)


def test_parallel_partner_missing(tmp_path):
    (tmp_path / "c.en").write_text("one\n")
    with pytest.raises(PairFileError, match=r"c.de was not found"):
        read_pairs([tmp_path / "c.en"], "en", "de")


def test_empty_undecodable_binary_and_missing_files(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n  \n")
    with pytest.raises(PairFileError, match=r"empty.tsv: the file is empty"):
        read_pairs([empty], "en", "de")
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("ok\tgut\nstill ok\tnoch gut\ncaf\xe9\tCaf\xe9\n".encode("latin-1"))
    with pytest.raises(PairFileError, match=r"latin1.tsv:3: not UTF-8 text \(byte 0xe9\)") as e:
        read_pairs([bad], "en", "de")
    _one_line(e.value)
    blob = tmp_path / "blob.en"
    (tmp_path / "blob.de").write_text("x\n")
    blob.write_bytes(b"x\x00y\n")
    with pytest.raises(PairFileError, match=r"blob.en:1: binary data"):
        read_pairs([blob], "en", "de")
    broken_gz = tmp_path / "broken.tsv.gz"
    broken_gz.write_bytes(b"not gzip at all")
    with pytest.raises(PairFileError, match="not a valid gzip file"):
        read_pairs([broken_gz], "en", "de")
    with pytest.raises(PairFileError, match="file not found"):
        read_pairs([tmp_path / "nope.tsv"], "en", "de")
    assert issubclass(PairFileError, DataError)


def test_summary_pairs_csv_jsonl_and_tsv(tmp_path):
    csv_p = tmp_path / "samsum.csv"
    csv_p.write_text(
        'id,dialogue,summary\n1,"Amy: hi\r\nBob: lunch at 1?\r\nAmy: ok","Amy and Bob meet at 1."\n',
        encoding="utf-8",
    )
    assert read_pairs([csv_p], task="summarize") == [
        ("Amy: hi\nBob: lunch at 1?\nAmy: ok", "Amy and Bob meet at 1.")
    ]
    js = tmp_path / "s.jsonl"
    js.write_text(json.dumps({"document": "Long text here.", "summary": "Short."}) + "\n")
    assert read_pairs([js], task="summarize") == [("Long text here.", "Short.")]
    js.write_text(json.dumps({"document": "x", "summary": "y"}) + "\n{broken\n")
    with pytest.raises(PairFileError, match=r"s.jsonl:2: not valid JSON"):
        read_pairs([js], task="summarize")
    js.write_text(json.dumps({"document": "x"}) + "\n")
    with pytest.raises(PairFileError, match=r"s.jsonl:1: expected a text field"):
        read_pairs([js], task="summarize")
    csv_p.write_text("id,dialogue,summary\n1,hello\n")
    with pytest.raises(PairFileError, match=r"samsum.csv:2: expected 3 CSV columns, found 2"):
        read_pairs([csv_p], task="summarize")
    tsv = tmp_path / "s.tsv"
    tsv.write_text("dialogue\tsummary\nA: hi B: hello\tThey greet.\n")
    assert read_pairs([tsv], task="summarize") == [("A: hi B: hello", "They greet.")]


def test_translation_jsonl_hf_style(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"translation": {"en": "Hi", "de": "Hallo"}}) + "\n")
    assert read_pairs([p], "en", "de") == [("Hi", "Hallo")]


def test_filter_pairs_dedups_and_drops_long_or_unbalanced():
    pairs = [("a b", "c d"), ("a b", "c d"), ("x" * 50, "y"), ("z" * 2000, "w" * 2000), ("", "e")]
    kept, stats = filter_pairs(pairs)
    assert kept == [("a b", "c d")]
    assert (stats.duplicates, stats.bad_ratio, stats.too_long, stats.empty) == (1, 1, 1, 1)
    with pytest.raises(PairFileError, match="no usable pairs"):
        filter_pairs([("", "")])
