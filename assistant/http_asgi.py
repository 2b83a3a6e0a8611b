"""ASGI plumbing of the HTTP service: error bodies, body limits, CORS, CSP, log redaction
and uvicorn's h11 protocol with a request-head deadline (RELIABILITY F8).

The middleware is plain ASGI, so a body over the limit or too slow is answered before a route
(or the multipart parser) buffers it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.errors import (
    InputError,
    LlmosError,
    SessionError,
    TicketStateError,
    UnknownSessionError,
    UnknownTicketError,
)
from assistant.keys import KeyStore
from assistant.sessions import SessionBusyError, StorageFullError, is_storage_full

LOG = logging.getLogger(__name__)
STORAGE_FULL_TEXT = "the server's storage is full; your message was not saved, retry later"


# -- errors -------------------------------------------------------------------------------
class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _methods_of(request: Request) -> list[str]:
    """Every method some route serves at this request's path (``GET /v1/sessions/{id}`` and
    ``DELETE /v1/sessions/{id}`` are two routes; a 405's ``Allow`` must list both)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        allowed = getattr(route, "methods", None)
        if not allowed:
            continue
        scope = {**request.scope, "method": next(iter(allowed))}
        if route.matches(scope)[0] == Match.FULL:
            methods |= set(allowed)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers["Allow"] = ", ".join(_methods_of(request))
        return error_response(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's shape, minus "input"/"ctx": they may echo huge or unencodable input
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        msg = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse({"error": msg, "detail": detail}, status_code=422)

    @app.exception_handler(LlmosError)
    async def _llmos_error(request: Request, exc: LlmosError) -> Response:
        if isinstance(exc, StorageFullError) or is_storage_full(exc):
            svc_ = getattr(request.app.state, "service", None)
            retry = str(request.app.state.settings.storage_retry_after_s)
            if svc_ is not None:
                svc_.storage_failed(exc)
            return error_response(503, STORAGE_FULL_TEXT, {"Retry-After": retry})
        if isinstance(exc, (UnknownSessionError, UnknownTicketError)):
            return error_response(404, str(exc))
        if isinstance(exc, TicketStateError):
            return error_response(409, str(exc))
        if isinstance(exc, InputError):
            return error_response(422, str(exc))
        if isinstance(exc, SessionBusyError):  # its message already says what to do
            return error_response(503, str(exc))
        if isinstance(exc, SessionError):
            return error_response(503, f"{exc}; please retry")
        LOG.warning("request failed: %s", exc)
        return error_response(400, str(exc))


# -- pure ASGI middleware -----------------------------------------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit:,} bytes)")


class BodyTimeout(StarletteHTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, f"request body not complete after {seconds:g} s", {"Connection": "close"}
        )


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length up front or while a chunked body
    streams in, before a route (or a multipart parser) buffers it; 408 for a body that is
    not complete ``timeout`` seconds after the request started (a slow-body client would
    otherwise hold a connection and a concurrency slot for as long as it likes)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        upload_limit: int,
        timeout: float = 30.0,
        upload_timeout: float = 300.0,
    ) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit
        self.timeout = timeout
        self.upload_timeout = upload_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["path"] == "/v1/documents"
        limit = self.upload_limit if upload else self.limit
        timeout = self.upload_timeout if upload else self.timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "invalid Content-Length")
                    return
                if declared > limit:
                    await _send_error(send, 413, BodyTooLarge(limit).detail)
                    return
        seen = 0
        body_done = False

        async def limited() -> Message:
            nonlocal seen, body_done
            if body_done:  # later receives wait for a disconnect: no deadline there
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.001, deadline - loop.time()))
            except TimeoutError:
                raise BodyTimeout(timeout) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, limited, send)


async def _send_error(send: Send, status: int, message: str, headers: Any = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class CorsMiddleware:
    """CORS for widget keys: an origin is allowed when an active widget key lists it.

    Preflights (no key) pass for those origins and fail (403) otherwise; responses to
    allowed origins carry ``Access-Control-Allow-Origin`` with that origin. Whether *this*
    request's key allows the origin is checked with the key (403 there).
    """

    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = None
        preflight = False
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                preflight = True
        extra = [(b"x-content-type-options", b"nosniff")]
        if origin is not None and origin in self.keys.widget_origins():
            extra += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", b"Retry-After"),
                (b"vary", b"Origin"),
            ]
            if preflight and scope["method"] == "OPTIONS":
                await _send_empty(
                    send,
                    204,
                    [
                        *extra,
                        (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                        (b"access-control-allow-headers", b"Content-Type, X-API-Key"),
                        (b"access-control-max-age", b"600"),
                    ],
                )
                return
        elif origin is not None and preflight and scope["method"] == "OPTIONS":
            await _send_error(send, 403, "origin not allowed", [(b"vary", b"Origin")])
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def page_csp(page: str) -> str:
    """A strict CSP for the demo page: only our own script, only its own inline style block.

    Even if a reply's text slipped past the widget's escaping, no injected script could run.
    """
    import base64
    import hashlib

    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode("utf-8")).digest()).decode() + "'"
        for m in re.findall(r"<style>(.*?)</style>", page, flags=re.S)
    )
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src {hashes or chr(39) + 'none' + chr(39)}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


_KEY_IN_TEXT = re.compile(r"llmos_(?:wk|ak|adm)_[A-Za-z0-9_-]+")


class RedactKeys(logging.Filter):
    """Blank out anything shaped like an API key in log lines (a client that puts its key
    in the query string would otherwise leave it in the access log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _KEY_IN_TEXT.sub("llmos_[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _KEY_IN_TEXT.sub("llmos_[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with :class:`RedactKeys` on every handler."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact_keys"] = {"()": "assistant.http_asgi.RedactKeys"}
    cfg["filters"]["redact_pii"] = {"()": "assistant.pii.RedactingFilter"}
    for handler in cfg.get("handlers", {}).values():
        handler.setdefault("filters", []).extend(["redact_keys", "redact_pii"])
    return cfg


def _h11_protocol() -> type:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


class GuardedH11Protocol(_h11_protocol()):  # type: ignore[misc]
    """uvicorn's h11 protocol plus a deadline for each request head.

    Stock uvicorn waits forever for the first request on a new connection (its keep-alive
    timer starts only after a response), so idle or 1-byte-a-second clients could hold
    ``limit_concurrency`` slots. Here a connection that has not sent a complete request head
    ``headers_timeout_s`` after it opened (or after its last response) is closed.
    """

    headers_timeout_s: float = 10.0  # set by serve() / app_from_env() from ServerSettings

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        self._head_cycle = self.cycle
        self._head_timer = self.loop.call_later(self.headers_timeout_s, self._head_deadline)

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self.cycle is self._head_cycle and not self.transport.is_closing():
            self.transport.close()  # no new request head since the timer was armed

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
