"""Loaders, confinement and the sentence-aware chunker."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from knowledge.documents import (
    LoadedDocument,
    chunk_document,
    discover,
    html_to_text,
    load_document,
    read_confined,
    resolve_ingest_path,
    split_sentences,
)
from knowledge.errors import IngestError, UnsafePathError, UnsupportedFileError
from tests.knowledge._kb_support import KETTLE_MD, encrypted_pdf_bytes, pdf_bytes


def _load(tmp_path: Path, name: str, data: bytes | str) -> LoadedDocument:
    p = tmp_path / name
    if isinstance(data, str):
        p.write_text(data)
    else:
        p.write_bytes(data)
    return load_document(p, read_confined(p, [tmp_path]))


def test_sentences_keep_offsets_and_abbreviations() -> None:
    text = "Dr. Smith went home. It rained, e.g. all day! Did it stop?\n\n# Heading\n- item one"
    spans = split_sentences(text)
    got = [text[a:b] for a, b in spans]
    assert got == [
        "Dr. Smith went home.", "It rained, e.g. all day!", "Did it stop?", "# Heading", "- item one"
    ]  # fmt: skip


def test_a_heading_and_the_sentence_under_it_are_apart() -> None:
    # Markdown puts the first sentence of a section on the line after its heading.
    text = "## Pests\nWhiteflies appeared in June. Traps hang above the cucumbers.\n# Last"
    got = [text[a:b] for a, b in split_sentences(text)]
    assert got == ["## Pests", "Whiteflies appeared in June.", "Traps hang above the cucumbers.",
                   "# Last"]  # fmt: skip


def test_chunks_are_exact_spans_with_one_sentence_overlap(tmp_path: Path) -> None:
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(40)]
    doc = _load(tmp_path, "long.txt", " ".join(sentences))
    chunks = chunk_document(doc, max_words=30)
    assert len(chunks) > 5
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text
        assert len(c.text.split()) <= 30
    for a, b in itertools.pairwise(chunks):
        last = split_sentences(a.text)[-1]
        assert b.text.startswith(a.text[last[0] : last[1]])  # one sentence carried over
    assert chunks[-1].text.endswith("39 has exactly seven words.")


def test_overlong_sentence_is_split_by_words(tmp_path: Path) -> None:
    doc = _load(tmp_path, "run.txt", " ".join(["word"] * 500))
    chunks = chunk_document(doc, max_words=120)
    assert all(len(c.text.split()) <= 120 for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) >= 500


def test_markdown_and_text(tmp_path: Path) -> None:
    doc = _load(tmp_path, "k.md", KETTLE_MD)
    assert doc.kind == "text" and "Lumo Kettle boils" in doc.text
    assert chunk_document(doc)[0].page is None


def test_html_drops_script_and_style() -> None:
    html = "<style>x{}</style><p>Hello &amp; welcome</p><script>evil()</script><p>Bye</p>"
    text = html_to_text(html)
    assert "evil" not in text and "x{}" not in text
    assert "Hello & welcome" in text and "Bye" in text


def test_html_deep_nesting_is_fine(tmp_path: Path) -> None:
    doc = _load(tmp_path, "deep.html", "<div>" * 20000 + "deep text" + "</div>" * 20000)
    assert doc.text.strip() == "deep text"


def test_pdf_pages_are_kept(tmp_path: Path) -> None:
    doc = _load(tmp_path, "m.pdf", pdf_bytes(["First page text.", "Second page text."]))
    assert doc.kind == "pdf"
    chunks = chunk_document(doc)
    assert [c.page for c in chunks] == [1, 2]
    assert chunks[1].text == "Second page text."


def test_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="encrypted"):
        _load(tmp_path, "secret.pdf", encrypted_pdf_bytes())


def test_malformed_pdf(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"bad\.pdf"):
        _load(tmp_path, "bad.pdf", b"%PDF-1.4\n garbage \x00\x01")


def test_faq_csv_jsonl_json(tmp_path: Path) -> None:
    csv_doc = _load(tmp_path, "f.csv", "Question,Answer\nHi there?,Hello.\n")
    assert csv_doc.faq[0].question == "Hi there?" and csv_doc.faq[0].answer == "Hello."
    jl = _load(
        tmp_path, "f.jsonl", '{"question": "Q1?", "answer": "A1"}\n\n{"q": "Q2?", "a": "A2"}\n'
    )
    assert [f.answer for f in jl.faq] == ["A1", "A2"]
    js = _load(tmp_path, "f.json", '[{"question": "Q?", "answer": "A"}]')
    assert js.faq[0].question == "Q?"


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("nocols.csv", "foo,bar\n1,2\n", "question"),
        ("empty_answer.csv", "question,answer\nWhy?,\n", "entry 2"),
        ("bad.jsonl", '{"question": "Q", "answer": "A"}\n{not json\n', "line 2"),
        ("list.jsonl", "[1, 2]\n", "not a JSON object"),
        ("deep.json", "[" * 100000 + "]" * 100000, "nested|JSON"),
        ("bigint.json", '[{"question": "q", "answer": ' + "9" * 100000 + "}]", "JSON|parse"),
        ("huge_field.csv", "question,answer\nq," + "x" * 200000 + "\n", "malformed"),
        ("bad.tsv", "a\tb\n", "line 1"),
        ("empty.tsv", "\n\n", "no triples"),
    ],
)
def test_malformed_structured_files(tmp_path: Path, name: str, data: str, match: str) -> None:
    with pytest.raises(IngestError, match=match):
        _load(tmp_path, name, data)


def test_triples_tsv_and_csv(tmp_path: Path) -> None:
    doc = _load(tmp_path, "kg.tsv", "head\trelation\ttail\nA\tr\tB\nB\ts\tC\n")
    assert doc.triples == [("A", "r", "B"), ("B", "s", "C")]
    doc = _load(tmp_path, "kg.triples.csv", "A,r,B\n")
    assert doc.kind == "triples" and doc.triples == [("A", "r", "B")]


def test_binary_and_empty_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileError, match="binary"):
        _load(tmp_path, "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR" + os.urandom(300))
    with pytest.raises(IngestError, match="empty"):
        _load(tmp_path, "empty.md", "")
    with pytest.raises(UnsupportedFileError, match="unsupported"):
        _load(tmp_path, "index.faiss", b"IxFI")


def test_utf16_with_bom(tmp_path: Path) -> None:
    doc = _load(tmp_path, "u16.txt", "Héllo wörld.".encode("utf-16"))
    assert doc.text.strip() == "Héllo wörld."


def test_oversized_file(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    p.write_text("x" * 2000)
    with pytest.raises(IngestError, match="too large"):
        read_confined(p, [tmp_path], max_bytes=1000)


def test_symlink_escape_and_traversal(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    for bad in [root / "link.txt", root / ".." / "outside" / "secret.txt", "/etc/passwd"]:
        with pytest.raises(UnsafePathError):
            resolve_ingest_path(bad, [root])
    with pytest.raises(UnsafePathError, match="NUL"):
        resolve_ingest_path(f"{root}/a\x00b.txt", [root])
    files, errors = discover([root], [root])
    assert files == []  # the dir symlink is not followed, the file symlink is refused
    assert any("outside the allowed" in e for _, e in errors)


def test_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match="regular"):
        read_confined(fifo, [tmp_path])


def test_discover_walks_folders_and_skips_unknown(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.md").write_text("x")
    (tmp_path / "a" / "photo.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "a" / ".hidden.md").write_text("h")
    files, errors = discover([tmp_path / "a"], [tmp_path / "a"])
    assert [f.name for f in files] == ["x.md"] and errors == []
    files, errors = discover([tmp_path / "a" / "photo.jpg"], [tmp_path])
    assert [f.name for f in files] == ["photo.jpg"]  # explicit: load_document reports it
