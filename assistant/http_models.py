"""Request and response bodies of the HTTP API (they are also its OpenAPI spec).

Field limits live here, next to the shapes they constrain, so a schemathesis run over
``/openapi.json`` exercises exactly what the routes accept.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from assistant.dialogue import MAX_MESSAGE_CHARS
from assistant.sessions import SESSION_ID_RE

#: An idempotency key: printable ASCII, no spaces.
IDEM_RE = r"^[\x21-\x7e]{1,128}$"
#: Text the dialogue accepts: no NUL, not only white space (linear-time in pydantic's engine).
TEXT_RE = r"^[^\x00]*[^\s\x00][^\x00]*$"
#: What ``Assistant`` accepts as an agent's name.
AGENT_NAME_RE = r"^[\w .'@-]*[\w.'@-][\w .'@-]*$"
#: A JSON upload's name: a plain text or Markdown file name.
DOC_NAME_RE = r"^[A-Za-z0-9_()+-]([A-Za-z0-9_()+ -]|\.[A-Za-z0-9_()+-]){0,100}\.(txt|md)$"
#: The largest turn or ticket number a path or query may name (SQLite's int64 with room).
MAX_ID = 2**62


# -- request and response bodies (also the OpenAPI spec) -----------------------------------
class ChatIn(BaseModel):
    session_id: str | None = Field(
        None, pattern=SESSION_ID_RE.pattern, description="null starts a new conversation"
    )
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=TEXT_RE)
    idempotency_key: str | None = Field(
        None,
        pattern=IDEM_RE,
        description="A retry with the same key returns the stored reply instead of a second turn",
    )


class SourceOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: str
    title: str
    ref: str = ""
    span: list[int] | None = None
    page: int | None = None
    snippet: str = ""
    score: float = 0.0
    path: list[str] = Field(default_factory=list)


class ReplyOut(BaseModel):
    text: str
    skill: str
    confidence: float
    sources: list[SourceOut]
    data: dict[str, Any]


class ChatOut(BaseModel):
    session_id: str
    turn: int | None = Field(
        description="the stored turn's number (a timed-out turn is stored too, with skill "
        '"timeout"); null only if even that could not be stored'
    )
    reply: ReplyOut
    handoff: dict[str, Any] | None
    timed_out: bool = False
    replayed: bool = False


class TurnOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    n: int
    kind: str
    user: str
    reply: str
    skill: str
    confidence: float
    sources: list[dict[str, Any]]
    created: float


class TranscriptOut(BaseModel):
    session_id: str
    turns: list[TurnOut]
    handoff: dict[str, Any] | None


class TicketOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    session_id: str
    status: str
    reason: str
    agent: str | None
    created: float
    updated: float


class TicketDetailOut(BaseModel):
    ticket: TicketOut
    turns: list[TurnOut]
    handoff: dict[str, Any] | None


class AgentIn(BaseModel):
    agent: str = Field(min_length=1, max_length=64, pattern=AGENT_NAME_RE)


class AgentReplyIn(AgentIn):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=TEXT_RE)


class AgentReplyOut(BaseModel):
    ticket: TicketOut
    turn: TurnOut


class CloseIn(BaseModel):
    agent: str | None = Field(None, min_length=1, max_length=64, pattern=AGENT_NAME_RE)


class FileError(BaseModel):
    file: str
    error: str


class IngestOut(BaseModel):
    saved: list[str]
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    errors: list[FileError]
    chunks: int
    seconds: float


class StatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    since: float
    bucket_s: int
    turns: int
    intents: dict[str, int]
    unanswered_rate: float
    handoffs: int
    series: list[dict[str, Any]]


class HealthOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str
    bot: str
    uptime_s: float
    turns_in_flight: int


class ErrorOut(BaseModel):
    error: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed body, or nothing usable in it",
        401: "Missing, unknown or revoked API key",
        403: "The key's role or origin does not allow this",
        404: "Unknown session or ticket",
        409: "The ticket's state does not allow this",
        413: "Request body too large",
        429: "Rate limit exceeded (see Retry-After)",
        503: "The session store is busy, or its disk is full; retry (see Retry-After)",
    }
    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}


AUTH_ERRORS = (400, 401, 403, 413, 429)
#: One server-sent event: ``start``, ``chunk`` (many), then ``done`` or ``error``.
SSE_EVENTS = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["start", "chunk", "done", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
