"""Imports point one way (DESIGN.md): knowledge/lm import nothing above them, skills never
import assistant/tui, and only the CLI reaches tui/."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "knowledge": {"skills", "assistant", "tui"},
    "lm": {"skills", "assistant", "tui"},
    "skills": {"assistant", "tui"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_downward(package):
    bad = []
    for path in (REPO / package).rglob("*.py"):
        hits = imported_top_levels(path) & FORBIDDEN[package]
        if hits:
            bad.append(f"{path.relative_to(REPO)} imports {sorted(hits)}")
    assert not bad, "\n".join(bad)


def test_only_cli_reaches_tui():
    for path in (REPO / "assistant").rglob("*.py"):
        if path.name == "cli.py":
            continue
        assert "tui" not in imported_top_levels(path), path


def test_no_unsafe_deserialisation():
    """No pickle, and torch.load only with weights_only=True, anywhere in the package."""
    for pkg in ("assistant", "knowledge", "skills", "lm", "tui"):
        for path in (REPO / pkg).rglob("*.py"):
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    mods = (
                        [a.name for a in node.names]
                        if isinstance(node, ast.Import)
                        else [node.module or ""]
                    )
                    assert not any(
                        m.split(".")[0] in {"pickle", "dill", "cloudpickle"} for m in mods
                    ), path
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load":
                    base = getattr(node.func, "value", None)
                    if getattr(base, "id", "") == "torch":
                        kw = {k.arg: k.value for k in node.keywords}
                        assert (
                            "weights_only" in kw
                            and getattr(kw["weights_only"], "value", None) is True
                        ), f"{path}:{node.lineno} torch.load without weights_only=True"


def test_public_api_exports():
    import assistant

    assert assistant.__all__ == sorted(assistant.__all__)
    for name in assistant.__all__:
        assert hasattr(assistant, name)
