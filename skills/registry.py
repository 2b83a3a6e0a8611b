"""Which skills exist: built-ins, ``@register_skill`` classes, and entry-point plugins.

Third-party packages declare their skills in ``pyproject.toml``::

    [project.entry-points."llmos.skills"]
    weather = "weather_skill:WeatherSkill"

An entry point may name a ``Skill`` subclass or a module/function exposing
``register_skills(register)``. A plugin that fails to import or defines a malformed skill is
recorded in :attr:`SkillRegistry.errors` with a one-line reason and skipped, so one broken
package never takes the assistant down.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from skills.base import Skill

ENTRY_POINT_GROUP = "llmos.skills"

#: Built-in skills, imported lazily by module path so a missing optional part fails alone.
DEFAULT_SKILLS = [
    "skills.qa:QASkill",
    "skills.summarize:SummarizeSkill",
    "skills.translate:TranslateSkill",
    "skills.generate:GenerateSkill",
    "skills.smalltalk:SmalltalkSkill",
    "skills.handoff:HandoffSkill",
    "skills.fallback:FallbackSkill",
]

_decorated: dict[str, type[Skill]] = {}
_lock = threading.Lock()


class UnknownSkillError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown skill"


def register_skill(cls: type[Skill]) -> type[Skill]:
    """Class decorator: make a skill available to every assistant built afterwards."""
    if not (inspect.isclass(cls) and issubclass(cls, Skill)):
        raise TypeError("@register_skill expects a Skill subclass")
    with _lock:
        _decorated[cls.name] = cls
    return cls


def unregister_skill(name: str) -> None:
    with _lock:
        _decorated.pop(name, None)


def _load_target(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


class SkillRegistry:
    """The skills one assistant uses, instantiated once each."""

    def __init__(self) -> None:
        self._skills: dict[str, Skill] = {}
        self.errors: list[str] = []

    # -- building ----------------------------------------------------------------------
    @classmethod
    def discover(
        cls,
        *,
        builtins: Iterable[str] = DEFAULT_SKILLS,
        entry_points_enabled: bool = True,
        disabled: Iterable[str] = (),
    ) -> SkillRegistry:
        reg = cls()
        for spec in builtins:
            reg._add_spec(spec, origin="built-in")
        with _lock:
            decorated = list(_decorated.values())
        for skill_cls in decorated:
            reg._add_class(skill_cls, origin=f"{skill_cls.__module__}")
        if entry_points_enabled:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                reg._add_entry_point(ep)
        for name in disabled:
            reg._skills.pop(name, None)
        return reg

    def _add_spec(self, spec: str, origin: str) -> None:
        try:
            target = _load_target(spec)
        except Exception as exc:  # a broken skill must not take the assistant down
            self.errors.append(f"skill {spec} ({origin}) failed to load: {_why(exc)}")
            return
        self._add_target(target, origin=f"{origin} {spec}")

    def _add_entry_point(self, ep: Any) -> None:
        origin = f"plugin {ep.name!r} ({ep.value})"
        try:
            target = ep.load()
        except Exception as exc:
            self.errors.append(f"{origin} failed to import: {_why(exc)}")
            return
        self._add_target(target, origin=origin)

    def _add_target(self, target: Any, origin: str) -> None:
        if inspect.isclass(target):
            self._add_class(target, origin)
            return
        hook: Callable[..., Any] | None = None
        if callable(target) and not inspect.ismodule(target):
            hook = target
        elif hasattr(target, "register_skills"):
            hook = target.register_skills
        if hook is None:
            self.errors.append(f"{origin} is neither a Skill class nor register_skills(register)")
            return
        try:
            hook(lambda skill_cls: self._add_class(skill_cls, origin))
        except Exception as exc:
            self.errors.append(f"{origin} failed in register_skills: {_why(exc)}")

    def _add_class(self, skill_cls: Any, origin: str) -> None:
        if not (inspect.isclass(skill_cls) and issubclass(skill_cls, Skill)):
            self.errors.append(f"{origin}: {skill_cls!r} is not a Skill subclass")
            return
        try:
            instance = skill_cls()
        except Exception as exc:
            self.errors.append(f"{origin}: skill {skill_cls.__name__} failed to start: {_why(exc)}")
            return
        self._skills[skill_cls.name] = instance

    def add(self, skill: Skill) -> None:
        """Add an already built skill (tests, embedding applications)."""
        self._skills[skill.name] = skill

    # -- lookup ------------------------------------------------------------------------
    def get(self, name: str) -> Skill:
        try:
            return self._skills[name]
        except KeyError:
            known = ", ".join(sorted(self._skills))
            raise UnknownSkillError(f"unknown skill {name!r}; known skills: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def names(self) -> list[str]:
        return sorted(self._skills)

    def all(self) -> list[Skill]:
        return [self._skills[n] for n in self.names()]


def _why(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
