"""Score fusion: BM25 is a bounded bonus on top of the dense cosine (knowledge/fusion.py)."""

from __future__ import annotations

import pytest

from knowledge.fusion import DEFAULT_WEIGHTS as W
from knowledge.fusion import fuse_faq, fuse_passage


def test_lexical_bonus_is_bounded_and_grows_with_bm25() -> None:
    assert fuse_faq(0.7, None, 0.0, W) == pytest.approx(0.7)
    assert fuse_passage(0.5, 0.0, W) == pytest.approx(0.5)
    faq = [fuse_faq(0.7, None, s, W) - 0.7 for s in (1.0, 8.0, 32.0, 1e9)]
    assert faq == sorted(faq) and faq[-1] <= W.faq_bm25 + 1e-9
    assert faq[2] == pytest.approx(W.faq_bm25 / 2)  # half the bonus at faq_bm25_half
    passage = [fuse_passage(0.5, s, W) - 0.5 for s in (1.0, 8.0, 1e9)]
    assert passage == sorted(passage) and passage[-1] <= W.bm25 + 1e-9


def test_faq_answer_similarity_never_sinks_a_verbatim_question() -> None:
    # the answer is mixed in, but at most 0.05 below the plain question match
    assert fuse_faq(0.95, -0.2, 0.0, W) == pytest.approx(0.90)
    assert fuse_faq(0.6, 0.9, 0.0, W) > 0.6
