"""Reading sentence pairs for the seq2seq models (translation pairs, document/summary pairs).

Accepted sources, gzipped or not (``.gz``):

* TSV: two tab-separated columns (source, target), or a header row naming the columns
  (language codes such as ``en	de	fr`` as in the demo phrasebook, or ``source``/``target``,
  ``dialogue``/``summary`` ...); with a header the ``src``/``tgt`` columns are picked by name;
* parallel files, one sentence per line, as corpora such as Multi30k ship them: ``train.en`` and
  ``train.de`` (pass either file, both, or the prefix ``train``);
* CSV with a header (SAMSum style ``id,dialogue,summary``) and JSONL objects (``{"en": .., "de":
  ..}``, ``{"translation": {"en": .., "de": ..}}``, ``{"dialogue": .., "summary": ..}``).

Everything that is not a pair is a :class:`~lm.errors.PairFileError` naming ``file:line``:
malformed rows, parallel files whose line counts differ, empty files, undecodable bytes. We
fail instead of skipping, because a silently shifted parallel corpus trains a useless model.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lm.errors import PairFileError

Pair = tuple[str, str]

#: Column / field names read as the source and target side of a summary pair.
SUMMARY_SOURCE_FIELDS = ("dialogue", "document", "text", "article", "source", "input", "src")
SUMMARY_TARGET_FIELDS = ("summary", "highlights", "target", "output", "tgt")
_TRANSLATE_SOURCE_FIELDS = ("source", "src", "input")
_TRANSLATE_TARGET_FIELDS = ("target", "tgt", "output")
_HEADER_WORDS = {
    *SUMMARY_SOURCE_FIELDS,
    *SUMMARY_TARGET_FIELDS,
    "id",
    "translation",
    "reference",
}
# ISO 639-1 codes a header row is likely to use; a data row of two such words is rare.
_LANG_CODES = frozenset(
    re.findall(
        r"[a-z]+",
        "af ar bg bn ca cs cy da de el en es et eu fa fi fr ga gl he hi hr hu hy id is it ja ka "
        "kk ko lt lv mk ms mt nb nl nn no pl pt ro ru sk sl sq sr sv sw ta te th tl tr uk ur vi zh",
    )
)
_STRIP_EXT = re.compile(r"\.gz$", re.I)


@dataclass
class PairStats:
    """What :func:`filter_pairs` kept and dropped (shown by the CLI and the benchmark)."""

    read: int = 0
    kept: int = 0
    duplicates: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    empty: int = 0
    notes: list[str] = field(default_factory=list)


def read_text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` allowed); undecodable bytes name their line."""
    path = Path(path)
    if not path.exists():
        raise PairFileError(f"{path}: file not found")
    if not path.is_file():
        raise PairFileError(f"{path}: not a file")
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise PairFileError(f"{path}: not a valid gzip file ({exc})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PairFileError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise PairFileError(f"{path}:{line}: binary data (NUL byte); expected a text file")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not any(ln.strip() for ln in lines):
        raise PairFileError(f"{path}: the file is empty")
    return lines


def _base_name(path: Path) -> str:
    return _STRIP_EXT.sub("", path.name)


def _suffix(path: Path) -> str:
    return Path(_base_name(path)).suffix.lower().lstrip(".")


def _find(stem: Path, code: str) -> Path | None:
    for cand in (stem.with_name(f"{stem.name}.{code}"), stem.with_name(f"{stem.name}.{code}.gz")):
        if cand.is_file():
            return cand
    return None


def _parallel_sources(
    paths: Iterable[Path], src: str | None, tgt: str | None
) -> list[tuple[Path, Path] | Path]:
    """Group the given paths into parallel (src_file, tgt_file) couples and single pair files."""
    out: list[tuple[Path, Path] | Path] = []
    seen: set[Path] = set()
    for p in (Path(x).expanduser() for x in paths):
        if src and tgt and _suffix(p) in (src, tgt) and p.is_file():
            stem = p.with_name(Path(_base_name(p)).stem)
            a, b = _find(stem, src), _find(stem, tgt)
            other = tgt if _suffix(p) == src else src
            if a is None or b is None:
                raise PairFileError(
                    f"{p}: looks like one side of a parallel corpus, but "
                    f"{stem.name}.{other} was not found next to it"
                )
            if a not in seen:
                seen.add(a)
                out.append((a, b))
            continue
        if not p.exists() and src and tgt:
            a, b = _find(p, src), _find(p, tgt)
            if a is not None and b is not None:
                if a not in seen:
                    seen.add(a)
                    out.append((a, b))
                continue
            if a is not None or b is not None:
                missing = f"{p.name}.{tgt if a is not None else src}"
                raise PairFileError(f"{p}: {missing} was not found for the parallel corpus")
        if not p.exists():
            raise PairFileError(f"{p}: file not found")
        if p.is_dir():
            raise PairFileError(f"{p}: is a directory; pass pair files (TSV, CSV, JSONL)")
        out.append(p)
    return out


def _read_parallel(a: Path, b: Path) -> list[Pair]:
    la, lb = read_text_lines(a), read_text_lines(b)
    if len(la) != len(lb):
        raise PairFileError(
            f"{a} has {len(la)} lines but {b} has {len(lb)}: parallel files must be line-aligned"
        )
    return [(x.strip(), y.strip()) for x, y in zip(la, lb, strict=True)]


def _pick(cols: list[str], wanted: tuple[str, ...]) -> int | None:
    low = [c.strip().lower() for c in cols]
    for w in wanted:
        if w in low:
            return low.index(w)
    return None


def _columns(
    header: list[str], src: str | None, tgt: str | None, task: str
) -> tuple[int, int] | None:
    """Indexes of the source and target columns named by ``header``, or None if not a header."""
    low = [c.strip().lower() for c in header]
    if src and tgt and src.lower() in low and tgt.lower() in low:
        return low.index(src.lower()), low.index(tgt.lower())
    looks_like_header = all(c in _HEADER_WORDS or c in _LANG_CODES for c in low) and bool(low)
    if not looks_like_header:
        return None
    if task == "summarize":
        s, t = _pick(header, SUMMARY_SOURCE_FIELDS), _pick(header, SUMMARY_TARGET_FIELDS)
    else:
        s, t = _pick(header, _TRANSLATE_SOURCE_FIELDS), _pick(header, _TRANSLATE_TARGET_FIELDS)
    if s is not None and t is not None:
        return s, t
    return -1, -1  # a header, but without the columns we need


def _need_columns_error(path: Path, header: list[str], src: str | None, tgt: str | None) -> str:
    names = ", ".join(h.strip() for h in header)
    if src and tgt:
        return f"{path}:1: the header has columns {names}; need {src!r} and {tgt!r}"
    return f"{path}:1: the header has columns {names}; say which with --src and --tgt"


def _read_tsv(path: Path, src: str | None, tgt: str | None, task: str) -> list[Pair]:
    lines = read_text_lines(path)
    first = next(i for i, ln in enumerate(lines) if ln.strip())
    header = lines[first].split("\t")
    cols = _columns(header, src, tgt, task)
    if cols == (-1, -1):
        raise PairFileError(_need_columns_error(path, header, src, tgt))
    width = len(header) if cols else 2
    s_i, t_i = cols if cols else (0, 1)
    start = first + 1 if cols else first
    pairs: list[Pair] = []
    for n in range(start, len(lines)):
        line = lines[n]
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != width:
            hint = " (is the separator a tab?)" if len(cells) == 1 else ""
            raise PairFileError(
                f"{path}:{n + 1}: expected {width} tab-separated columns, found {len(cells)}{hint}"
            )
        a, b = cells[s_i].strip(), cells[t_i].strip()
        if not a or not b:
            side = "source" if not a else "target"
            raise PairFileError(f"{path}:{n + 1}: the {side} text is empty")
        pairs.append((a, b))
    if not pairs:
        raise PairFileError(f"{path}: no pairs (only a header)")
    return pairs


def _read_csv(path: Path, src: str | None, tgt: str | None, task: str) -> list[Pair]:
    text = "\n".join(read_text_lines(path))
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise PairFileError(f"{path}:1: not a CSV file with a header ({exc})") from None
    cols = _columns(header, src, tgt, task)
    if cols is None or cols == (-1, -1):
        raise PairFileError(_need_columns_error(path, header, src, tgt))
    s_i, t_i = cols
    pairs: list[Pair] = []
    try:
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise PairFileError(
                    f"{path}:{reader.line_num}: expected {len(header)} CSV columns, "
                    f"found {len(row)}"
                )
            a, b = row[s_i].strip(), row[t_i].strip()
            if not a or not b:
                side = "source" if not a else "target"
                raise PairFileError(f"{path}:{reader.line_num}: the {side} text is empty")
            pairs.append((a, b))
    except csv.Error as exc:
        raise PairFileError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    if not pairs:
        raise PairFileError(f"{path}: no pairs (only a header)")
    return pairs


def _field(obj: dict, names: tuple[str, ...]) -> object:
    for n in names:
        if n in obj:
            return obj[n]
    return None


def _read_jsonl(path: Path, src: str | None, tgt: str | None, task: str) -> list[Pair]:
    pairs: list[Pair] = []
    for n, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise PairFileError(f"{path}:{n}: not valid JSON ({exc.args[0][:60]})") from None
        if not isinstance(obj, dict):
            raise PairFileError(f"{path}:{n}: expected a JSON object")
        if isinstance(obj.get("translation"), dict):
            obj = obj["translation"]
        if task == "summarize":
            a, b = _field(obj, SUMMARY_SOURCE_FIELDS), _field(obj, SUMMARY_TARGET_FIELDS)
            want = "a text field (dialogue/document/text) and a summary field"
        else:
            a = obj.get(src) if src else None
            b = obj.get(tgt) if tgt else None
            if a is None and b is None:
                a, b = _field(obj, _TRANSLATE_SOURCE_FIELDS), _field(obj, _TRANSLATE_TARGET_FIELDS)
            want = f"fields {src!r} and {tgt!r}" if src and tgt else "source and target fields"
        if not isinstance(a, str) or not isinstance(b, str):
            raise PairFileError(f"{path}:{n}: expected {want}")
        if not a.strip() or not b.strip():
            side = "source" if not a.strip() else "target"
            raise PairFileError(f"{path}:{n}: the {side} text is empty")
        pairs.append((a.strip(), b.strip()))
    return pairs


def read_pairs(
    paths: Iterable[str | Path],
    src: str | None = None,
    tgt: str | None = None,
    *,
    task: str = "translate",
) -> list[Pair]:
    """All pairs from ``paths`` in order (see the module docstring for the formats).

    Args:
        paths: pair files, parallel files or parallel-file prefixes.
        src, tgt: language codes; pick header columns / JSON fields and find parallel files.
        task: ``"translate"`` or ``"summarize"`` (which column names count as a pair).
    """
    paths = list(paths)
    if not paths:
        raise PairFileError("no pair files given")
    pairs: list[Pair] = []
    for source in _parallel_sources([Path(p) for p in paths], src, tgt):
        if isinstance(source, tuple):
            got = _read_parallel(*source)
        else:
            kind = _suffix(source)
            if kind == "csv":
                got = _read_csv(source, src, tgt, task)
            elif kind in ("jsonl", "json", "ndjson"):
                got = _read_jsonl(source, src, tgt, task)
            else:
                got = _read_tsv(source, src, tgt, task)
        pairs.extend(got)
    if not any(a and b for a, b in pairs):
        raise PairFileError(f"{', '.join(str(p) for p in paths)}: no pairs found")
    return pairs


def filter_pairs(
    pairs: list[Pair],
    *,
    max_chars: int = 1000,
    max_ratio: float = 9.0,
    dedup: bool = True,
) -> tuple[list[Pair], PairStats]:
    """Drop empty, duplicate, over-long and badly length-mismatched pairs (a standard MT clean).

    ``max_ratio`` compares character lengths; pass ``0`` to keep every ratio (summaries are
    meant to be much shorter than their documents).
    """
    stats = PairStats(read=len(pairs))
    seen: set[Pair] = set()
    kept: list[Pair] = []
    for a, b in pairs:
        if not a or not b:
            stats.empty += 1
            continue
        if dedup:
            if (a, b) in seen:
                stats.duplicates += 1
                continue
            seen.add((a, b))
        if len(a) > max_chars or len(b) > max_chars:
            stats.too_long += 1
            continue
        if max_ratio and max(len(a), len(b)) > max_ratio * max(1, min(len(a), len(b))) + 10:
            stats.bad_ratio += 1
            continue
        kept.append((a, b))
    stats.kept = len(kept)
    if not kept:
        raise PairFileError("no usable pairs left after removing empty and over-long ones")
    return kept, stats
