"""Skills: the things an llmos assistant can do, and the API to add your own."""

from skills.base import Reply, Services, SessionView, Skill, SkillError, SkillRequest, Slot, Source
from skills.registry import SkillRegistry, UnknownSkillError, register_skill, unregister_skill

__all__ = [
    "Reply",
    "Services",
    "SessionView",
    "Skill",
    "SkillError",
    "SkillRegistry",
    "SkillRequest",
    "Slot",
    "Source",
    "UnknownSkillError",
    "register_skill",
    "unregister_skill",
]
