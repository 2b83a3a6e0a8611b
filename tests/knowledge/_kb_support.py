"""Shared helpers for the knowledge-base tests: a fast fake encoder and file builders."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

DIM = 384


class FakeEmbedder:
    """Deterministic bag-of-words vectors: texts sharing words are similar, others are not."""

    dim = DIM

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little")
        return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), DIM), np.float32)
        for i, t in enumerate(texts):
            words = re.findall(r"\w+", t.lower()) or ["<empty>"]
            v = sum(self._word(w) for w in words)
            out[i] = v / (np.linalg.norm(v) or 1.0)
        return out


def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (xref computed)."""
    objs: list[bytes] = []
    n = len(pages)
    font_id = 3 + 2 * n
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R"
            f" /Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    )
    return out.getvalue()


def encrypted_pdf_bytes() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(pdf_bytes(["secret page"]))).pages:
        writer.add_page(page)
    writer.encrypt("secret", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


FAQ_CSV = (
    "question,answer\n"
    "How do I reset my password?,Open Settings and choose Reset password.\n"
    '"What are your opening hours?","We are open 9 to 5, Monday to Friday."\n'
)

KETTLE_MD = """# Lumo Kettle

The Lumo Kettle boils one litre of water in three minutes. It is made by Juniper Labs in Oslo.
The kettle has a two-year warranty. Its base is made of brushed steel.

## Cleaning

Descale the kettle every month with white vinegar. Rinse it twice afterwards.
"""


def make_corpus(root: Path) -> Path:
    """A small folder with one file of each supported kind."""
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "kettle.md").write_text(KETTLE_MD)
    (docs / "notes.txt").write_text("Shipping is free over fifty dollars. Orders ship daily.\n")
    (docs / "about.html").write_text(
        "<html><head><style>p{}</style><script>alert('x')</script></head>"
        "<body><h1>About us</h1><p>We sell kettles &amp; grinders since 2001.</p></body></html>"
    )
    (docs / "manual.pdf").write_bytes(
        pdf_bytes(["Page one talks about grinders.", "Page two covers the warranty claim."])
    )
    (root / "faq.csv").write_text(FAQ_CSV)
    (root / "facts.tsv").write_text("head\trelation\ttail\nLumo Kettle\tmade_by\tJuniper Labs\n")
    return root
