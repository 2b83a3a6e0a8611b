"""``llmos init``: write a new bot project a user can edit and run at once."""

from __future__ import annotations

from pathlib import Path

from assistant.errors import ProjectError

LLMOS_YAML = """\
# llmos bot project. Every field is optional; see the README for all settings.
name: My Assistant
company: ""
description: An assistant that answers from the documents in knowledge/.
greeting: "Hi! Ask me anything about our documents."
router:
  confidence_threshold: 0.45   # below this the assistant asks what you meant
  clarify_margin: 0.10
knowledge:
  sources: [knowledge]         # folders ingested automatically at start-up
  index: auto                  # flat (exact) or hnsw; auto switches to HNSW at 20,000 chunks
  ef_search: auto              # HNSW search beam; auto widens it as the index grows
skills:
  disabled: []                 # e.g. [translate]
# sessions: {retention_days: 30}  # delete conversations idle this long (default: keep forever)
"""

INTENTS_YAML = """\
# Intents teach the router how your users phrase things. Each maps to a skill:
# qa (answers from knowledge/), summarize, translate, generate, smalltalk, handoff, fallback.
intents:
  greeting:
    skill: smalltalk
    examples: [hi, hello, good morning, hey there]
  thanks:
    skill: smalltalk
    examples: [thanks, thank you, cheers, much appreciated]
  human_agent:
    skill: handoff
    examples: [I want to talk to a person, get me a human, can I speak to someone]
  question:
    skill: qa
    examples:
      - what are your opening hours
      - how do I reset my password
      - where can I find the manual
      - what does the policy say about returns
"""

FAQ_CSV = """\
question,answer
What is this assistant?,"An llmos assistant. It answers from the documents, FAQ files and triples in the knowledge/ folder."
How do I add documents?,"Put txt, Markdown, HTML, PDF, FAQ CSV/JSONL or triples TSV files in knowledge/ and run llmos ingest knowledge."
"""


def scaffold(directory: Path) -> Path:
    root = directory.expanduser().resolve()
    if (root / "llmos.yaml").exists():
        raise ProjectError(f"{directory} already holds a bot project (llmos.yaml exists)")
    if root.exists() and not root.is_dir():
        raise ProjectError(f"{directory} exists and is not a directory")
    try:
        (root / "knowledge").mkdir(parents=True, exist_ok=True)
        (root / "models").mkdir(exist_ok=True)
        (root / "llmos.yaml").write_text(LLMOS_YAML, encoding="utf-8")
        if not (root / "intents.yaml").exists():
            (root / "intents.yaml").write_text(INTENTS_YAML, encoding="utf-8")
        faq = root / "knowledge" / "faq.csv"
        if not faq.exists():
            faq.write_text(FAQ_CSV, encoding="utf-8")
    except OSError as exc:
        raise ProjectError(f"cannot create {directory}: {exc.strerror or exc}") from None
    return root
