"""Skill API: declaration checks, decorator registration, entry points, broken plugins."""

import sys
import textwrap

import pytest

from skills import Reply, Skill, SkillRegistry, register_skill, unregister_skill
from skills.registry import UnknownSkillError


def test_missing_attributes_fail_at_definition():
    with pytest.raises(TypeError, match="non-empty `description`"):

        class NoDescription(Skill):
            name = "x"

            def handle(self, request, services):
                yield Reply("x")

    with pytest.raises(TypeError, match="must implement handle"):

        class NoHandle(Skill):
            name = "y"
            description = "y"

    with pytest.raises(TypeError, match=r"handle must take \(self, request, services\)"):

        class BadSignature(Skill):
            name = "z"
            description = "z"

            def handle(self, request):
                yield Reply("z")


def test_decorator_registration():
    @register_skill
    class HelloSkill(Skill):
        name = "hello_test"
        description = "Says hello."
        examples = ["say hello"]

        def handle(self, request, services):
            yield self.reply("hello")

    try:
        reg = SkillRegistry.discover(builtins=[], entry_points_enabled=False)
        assert "hello_test" in reg.names()
        assert reg.get("hello_test").description == "Says hello."
    finally:
        unregister_skill("hello_test")
    with pytest.raises(UnknownSkillError, match="known skills"):
        SkillRegistry.discover(builtins=[], entry_points_enabled=False).get("hello_test")


def test_builtins_load_without_errors():
    reg = SkillRegistry.discover(entry_points_enabled=False)
    assert {"qa", "summarize", "translate", "smalltalk", "handoff", "fallback"} <= set(reg.names())
    assert reg.errors == []


def _fake_dist(tmp_path, name, module_src, ep_value):
    """A minimal installed distribution (dist-info + module) on a temporary sys.path entry."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(module_src))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[llmos.skills]\n{name} = {ep_value}\n")
    return site


def test_broken_plugins_are_reported_not_fatal(tmp_path, monkeypatch):
    site = _fake_dist(
        tmp_path, "broken_import", "import does_not_exist_xyz\n", "broken_import:Skill"
    )
    _fake_dist(
        tmp_path,
        "bad_signature",
        """
        from skills import Skill, Reply
        class BadSkill(Skill):
            name = "bad"
            description = "bad"
            def handle(self, request):
                yield Reply("x")
        """,
        "bad_signature:BadSkill",
    )
    _fake_dist(
        tmp_path,
        "good_plugin",
        """
        from skills import Skill
        class GoodSkill(Skill):
            name = "good"
            description = "works"
            examples = ["do the good thing"]
            def handle(self, request, services):
                yield self.reply("good")
        """,
        "good_plugin:GoodSkill",
    )
    monkeypatch.syspath_prepend(str(site))
    reg = SkillRegistry.discover(builtins=["skills.smalltalk:SmalltalkSkill"])
    assert "good" in reg.names() and "smalltalk" in reg.names()
    text = "\n".join(reg.errors)
    assert "broken_import" in text and "ModuleNotFoundError" in text
    assert "bad_signature" in text and "handle must take" in text
    for mod in ("broken_import", "bad_signature", "good_plugin"):
        sys.modules.pop(mod, None)
