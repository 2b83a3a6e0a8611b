"""Errors a user of llmos can cause, each with a message worth printing on one line.

    LlmosError
     ├── ConfigError          llmos.yaml / intents.yaml invalid (names file, line, field)
     ├── ProjectError         not a bot project, missing directory
     ├── InputError           empty, oversized or undecodable message
     ├── SessionError
     │    ├── UnknownSessionError
     │    ├── UnknownTicketError
     │    └── TicketStateError  a desk action that the ticket's state does not allow
     ├── RouterError          router cannot be trained or loaded
     └── SkillLoadError       a third-party skill failed to import or is malformed

The CLI prints ``error: <message>`` and exits non-zero for any of these; nothing else
should reach the user as a traceback.
"""

from __future__ import annotations


class LlmosError(Exception):
    """Base class: anything the user can fix from the message alone."""


class ConfigError(LlmosError):
    pass


class ProjectError(LlmosError):
    pass


class InputError(LlmosError):
    pass


class SessionError(LlmosError):
    pass


class UnknownSessionError(SessionError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown session"


class UnknownTicketError(SessionError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown ticket"


class TicketStateError(SessionError):
    pass


class RouterError(LlmosError):
    pass


class SkillLoadError(LlmosError):
    pass
