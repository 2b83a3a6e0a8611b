"""Turning user files into text, FAQ items or triples, and text into overlapping chunks.

Every loader works on bytes read through :func:`read_confined`, which opens the resolved
path with ``O_NOFOLLOW`` under one of the roots the user gave, so a symlink swapped in after
the check cannot redirect the read. Loaders never execute or unpickle anything: ``.faiss``,
``.pkl`` or ``.pt`` files are simply unsupported. Every failure is an :class:`IngestError`
whose message names the file, so a batch can report it on one line and go on.

Chunks keep their source offsets (character span in the document text, PDF page) so an
answer can cite exactly where it came from.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from knowledge.errors import IngestError, UnsafePathError, UnsupportedFileError

MAX_BYTES = 50 * 1024 * 1024
MAX_PDF_PAGES = 5_000
TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
FAQ_SUFFIXES = {".csv", ".jsonl", ".json"}
TRIPLE_SUFFIXES = {".tsv"}
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | FAQ_SUFFIXES | TRIPLE_SUFFIXES | {".pdf"}


@dataclass
class Chunk:
    text: str
    start: int
    end: int
    page: int | None = None


@dataclass
class FaqItem:
    question: str
    answer: str


@dataclass
class LoadedDocument:
    """What one file contributes: prose (chunked later), FAQ items, or triples."""

    path: Path
    kind: str  # "text" | "html" | "pdf" | "faq" | "triples"
    text: str = ""
    pages: list[tuple[int, int, int]] = field(default_factory=list)  # (page, start, end)
    faq: list[FaqItem] = field(default_factory=list)
    triples: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


# -- paths -------------------------------------------------------------------------------
def _is_within(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:  # different drives
        return False


def resolve_ingest_path(path: str | Path, roots: Sequence[Path]) -> Path:
    """Resolve ``path`` (symlinks included) and require it to lie under one of ``roots``."""
    raw = str(path)
    if "\x00" in raw:
        raise UnsafePathError(f"{raw!r}: path contains a NUL byte")
    resolved = Path(os.path.realpath(os.path.expanduser(raw)))
    real_roots = [Path(os.path.realpath(os.path.expanduser(str(r)))) for r in roots]
    if not any(_is_within(resolved, r) for r in real_roots):
        raise UnsafePathError(f"{raw}: resolves outside the allowed folders ({resolved})")
    return resolved


def discover(paths: Sequence[str | Path], roots: Sequence[Path]) -> tuple[list[Path], list]:
    """Expand folders recursively; return (files to ingest, [(path, reason)] refused).

    Files found inside folders with an unsupported suffix are skipped silently (a folder
    of notes may hold images); a file named explicitly with one is reported.
    """
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path, explicit: bool) -> None:
        try:
            rp = resolve_ingest_path(p, roots)
        except IngestError as exc:
            errors.append((str(p), str(exc)))
            return
        try:
            exists, is_dir = rp.exists(), rp.is_dir()
        except OSError as exc:  # name too long, permission denied on a parent, ...
            errors.append((str(p), f"{str(p)[:200]}: cannot access ({exc.strerror or exc})"))
            return
        if not exists:
            errors.append((str(p), f"{p}: no such file or folder"))
            return
        if is_dir:
            if explicit or not p.is_symlink():
                walk(rp)
            return
        if not explicit and (suffix_of(rp) not in SUPPORTED or rp.name.startswith(".")):
            return
        if rp not in seen:
            seen.add(rp)
            files.append(rp)

    def walk(folder: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                add(Path(dirpath) / fn, explicit=False)

    for p in paths:
        add(Path(p).expanduser(), explicit=True)
    return files, errors


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".triples.csv"):
        return ".tsv"  # head, relation, tail in CSV form
    return path.suffix.lower()


def read_confined(path: Path, roots: Sequence[Path], max_bytes: int = MAX_BYTES) -> bytes:
    """Read a regular file under ``roots`` without following a last-moment symlink."""
    rp = resolve_ingest_path(path, roots)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(rp, flags)
    except OSError as exc:
        raise IngestError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path}: not a regular file")
        if st.st_size > max_bytes:
            raise IngestError(
                f"{path}: too large ({st.st_size / 1e6:.1f} MB > {max_bytes / 1e6:.1f} MB limit)"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise IngestError(f"{path}: too large (grew past the {max_bytes / 1e6:.1f} MB limit)")
    return data


# -- decoding ----------------------------------------------------------------------------
def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 (BOM tolerated) or UTF-16 with BOM; binary files are refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        if b"\x00" in data[:8192]:
            raise UnsupportedFileError(f"{path}: looks binary (NUL bytes), not text")
        text = data.decode("utf-8-sig", errors="replace")
        if text and text.count("\ufffd") > max(8, len(text) // 50):
            raise UnsupportedFileError(f"{path}: not valid UTF-8 text (binary file?)")
    text = text.lstrip("\ufeff").replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text)


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "head", "svg"})
    _BLOCK = frozenset({
        "p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "td",
        "th", "table", "section", "article", "header", "footer", "blockquote", "pre", "title",
        "dt", "dd", "hr",
    })  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n" if tag in {"p", "div", "h1", "h2", "h3", "tr"} else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n\n" if tag.startswith("h") or tag == "p" else "\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page; no entity expansion beyond HTML's own, no fetching."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# -- loaders -----------------------------------------------------------------------------
def load_document(path: Path, data: bytes) -> LoadedDocument:
    """Parse the bytes of ``path`` by its suffix; raise :class:`IngestError` if unusable."""
    suffix = suffix_of(path)
    try:
        if suffix in TEXT_SUFFIXES:
            doc = LoadedDocument(path, "text", text=decode_text(data, path))
        elif suffix in HTML_SUFFIXES:
            doc = LoadedDocument(path, "html", text=html_to_text(decode_text(data, path)))
        elif suffix == ".pdf":
            doc = _load_pdf(path, data)
        elif suffix in FAQ_SUFFIXES:
            doc = LoadedDocument(path, "faq", faq=_load_faq(path, decode_text(data, path)))
        elif suffix in TRIPLE_SUFFIXES:
            doc = LoadedDocument(path, "triples", triples=_load_triples(path, data))
        else:
            raise UnsupportedFileError(f"{path}: unsupported file type '{suffix or path.name}'")
    except IngestError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise IngestError(f"{path}: too deeply nested or too large to parse") from exc
    except Exception as exc:  # a parser bug must not end the batch
        raise IngestError(f"{path}: could not parse ({type(exc).__name__}: {exc})") from exc
    if doc.kind in {"text", "html"}:
        if not doc.text.strip():
            raise IngestError(f"{path}: empty document (no text)")
        doc.pages = [(0, 0, len(doc.text))]
    return doc


def _load_pdf(path: Path, data: bytes) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise IngestError(f"{path}: encrypted PDF, skipped (decrypt it first)")
        n = len(reader.pages)
        if n > MAX_PDF_PAGES:
            raise IngestError(f"{path}: {n} pages is more than the {MAX_PDF_PAGES}-page limit")
        parts: list[str] = []
        pages: list[tuple[int, int, int]] = []
        pos = 0
        for i, page in enumerate(reader.pages, start=1):
            t = unicodedata.normalize("NFC", (page.extract_text() or "").replace("\x00", ""))
            t = t.encode("utf-8", "replace").decode("utf-8").strip()
            if not t:
                continue
            if parts:
                parts.append("\n\n")
                pos += 2
            pages.append((i, pos, pos + len(t)))
            parts.append(t)
            pos += len(t)
    except PdfReadError as exc:
        raise IngestError(f"{path}: malformed PDF ({exc})") from exc
    if not pages:
        raise IngestError(f"{path}: PDF has no extractable text (scanned image?)")
    return LoadedDocument(path, "pdf", text="".join(parts), pages=pages)


def _pick(keys: Sequence[str], *names: str) -> str | None:
    lower = {k.strip().lower(): k for k in keys if isinstance(k, str)}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def _load_faq(path: Path, text: str) -> list[FaqItem]:
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        fields = reader.fieldnames or []
        if _pick(fields, "question", "q") is None or _pick(fields, "answer", "a") is None:
            raise IngestError(f"{path}: FAQ CSV needs 'question' and 'answer' columns")
        try:
            rows = [(i + 2, r) for i, r in enumerate(reader)]
        except csv.Error as exc:
            raise IngestError(f"{path}: malformed CSV line {reader.line_num}: {exc}") from exc
    elif path.suffix.lower() == ".jsonl":
        for i, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise IngestError(f"{path}: line {i} is not valid JSON ({exc})") from exc
            if not isinstance(obj, dict):
                raise IngestError(f"{path}: line {i} is not a JSON object")
            rows.append((i, obj))
    else:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise IngestError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(obj, list) or not all(isinstance(o, dict) for o in obj):
            raise IngestError(f"{path}: a JSON FAQ must be a list of question/answer objects")
        rows = [(i + 1, o) for i, o in enumerate(obj)]
    items = []
    for entry, row in rows:
        qk, ak = _pick(list(row), "question", "q"), _pick(list(row), "answer", "a")
        q = row.get(qk) if qk else None
        a = row.get(ak) if ak else None
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
            raise IngestError(f"{path}: entry {entry} needs a non-empty question and answer")
        items.append(FaqItem(" ".join(q.split()), a.strip()))
    if not items:
        raise IngestError(f"{path}: no FAQ entries")
    return items


def _load_triples(path: Path, data: bytes) -> list[tuple[str, str, str]]:
    text = decode_text(data, path)
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    triples: list[tuple[str, str, str]] = []
    try:
        for i, row in enumerate(reader, start=1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if len(cells) != 3 or not all(cells):
                raise IngestError(f"{path}: line {i} needs exactly head, relation, tail")
            if i == 1 and [c.lower() for c in cells] == ["head", "relation", "tail"]:
                continue
            triples.append((cells[0], cells[1], cells[2]))
    except csv.Error as exc:
        raise IngestError(f"{path}: malformed line {reader.line_num}: {exc}") from exc
    if not triples:
        raise IngestError(f"{path}: no triples")
    return triples


# -- sentences and chunks ----------------------------------------------------------------
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|mr|mrs|ms|dr|prof|inc|ltd|no|fig|approx|st)\.$", re.I)
_SENT_END = re.compile(r"[.!?]+[\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9])")
_BLOCK_LINE = re.compile(r"\n\s*\n|\n(?=\s*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|\|))")
_HEADING = re.compile(r"\s*#{1,6}[ \t][^\n]*(?=\n)")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` in ``text``; blank lines and list/heading lines split too."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for b0, b1 in _blocks(text, start, end):
        s = b0
        for m in _SENT_END.finditer(text, b0, b1):
            if _ABBREV.search(text, max(s, m.start() - 6), m.end()):
                continue
            _emit(text, s, m.end(), spans)
            s = m.end()
        _emit(text, s, b1, spans)
    return spans


def _blocks(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    s = start
    for m in _BLOCK_LINE.finditer(text, start, end):
        yield from _heading_apart(text, s, m.start())
        s = m.end()
    yield from _heading_apart(text, s, end)


def _heading_apart(text: str, a: int, b: int) -> Iterator[tuple[int, int]]:
    """A block that opens with a heading line ("## Pests\nWhiteflies appeared in June.") as
    the heading and the rest: the sentence under a heading is a sentence of its own."""
    m = _HEADING.match(text, a, b)
    if m is None:
        yield a, b
        return
    yield a, m.end()
    yield m.end(), b


def _emit(text: str, a: int, b: int, spans: list[tuple[int, int]]) -> None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if b > a:
        spans.append((a, b))


def _split_long(text: str, span: tuple[int, int], max_words: int) -> list[tuple[int, int]]:
    words = [m.span() for m in re.finditer(r"\S+", text[span[0] : span[1]])]
    if len(words) <= max_words:
        return [span]
    out = []
    for i in range(0, len(words), max_words):
        part = words[i : i + max_words]
        out.append((span[0] + part[0][0], span[0] + part[-1][1]))
    return out


def chunk_document(doc: LoadedDocument, max_words: int = 120, overlap: int = 1) -> list[Chunk]:
    """Chunks of whole sentences up to ``max_words`` words, sharing ``overlap`` sentences."""
    chunks: list[Chunk] = []
    for page, p0, p1 in doc.pages:
        sents: list[tuple[int, int]] = []
        for sp in split_sentences(doc.text, p0, p1):
            sents.extend(_split_long(doc.text, sp, max_words))
        counts = [len(doc.text[a:b].split()) for a, b in sents]
        i = 0
        while i < len(sents):
            j, words = i, 0
            while j < len(sents) and (j == i or words + counts[j] <= max_words):
                words += counts[j]
                j += 1
            a, b = sents[i][0], sents[j - 1][1]
            chunks.append(Chunk(doc.text[a:b], a, b, page or None))
            if j >= len(sents):
                break
            i = max(i + 1, j - overlap)
    return chunks
