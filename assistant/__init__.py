"""llmos assistant: the dialogue manager, router, sessions and the public Python API."""

from assistant.api import Assistant
from assistant.errors import (
    ConfigError,
    InputError,
    LlmosError,
    ProjectError,
    RouterError,
    SessionError,
    SkillLoadError,
    UnknownSessionError,
)
from skills.base import Reply, Source

__all__ = [
    "Assistant",
    "ConfigError",
    "InputError",
    "LlmosError",
    "ProjectError",
    "Reply",
    "RouterError",
    "SessionError",
    "SkillLoadError",
    "Source",
    "UnknownSessionError",
]
