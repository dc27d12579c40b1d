"""The first thing a request meets in `litelora serve`: the bearer token, then a bound on the body it may send.

A plain ASGI layer, outside FastAPI: FastAPI reads and validates a body before any route runs, so a check in a
route came too late (an unauthenticated malformed body got 422, not 401; a chunked body, which declares no
Content-Length, was read in full whatever its size). Here a request without the token is refused before one
byte of its body is received, and the body of one with it is counted as it arrives and refused with 413 after
at most the limit plus one chunk.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.serving.access import authorized

OPEN_PATHS = frozenset({"/healthz"})
"""Answered without the token: liveness probes carry none, and it says only which version is served."""
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
"""FastAPI's API browser and schema: not found behind a token, so it does not map the API for strangers."""


class RequestGuard:
    """ASGI middleware: `token_digest()` is asked per request (Serve's replica knows it only once started)."""

    def __init__(self, app: ASGIApp, token_digest: Callable[[], str | None], max_body_bytes: int):
        self.app = app
        self.token_digest = token_digest
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, Headers(scope=scope))
        if refusal is None:
            try:
                body = await _read_at_most(receive, self.max_body_bytes)
            except ClientDisconnect:
                return  # nobody left to answer
            if body is not None:
                await self.app(scope, _replaying(body, receive), send)
                return
            refusal = _too_large(self.max_body_bytes)
        await refusal(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        """The answer that needs no body: a missing token (401), a hidden page (404), a declared oversize (413)."""
        digest = self.token_digest()
        path = _route_path(scope)
        if digest is not None and path in DOC_PATHS:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if path not in OPEN_PATHS and not authorized(headers.get("authorization"), digest):
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return _too_large(self.max_body_bytes, declared)
        return None


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as more than `limit` bytes have come."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the client's own messages (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _route_path(scope: Scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _too_large(limit: int, declared: str | None = None) -> JSONResponse:
    size = f"of {declared} bytes" if declared else f"over {limit} bytes"
    return JSONResponse({"detail": f"request body {size}; at most {limit}"}, status_code=413)
