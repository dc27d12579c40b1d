"""What a request meets before FastAPI parses it: the token first, then a bound on the body as it arrives.

Raw ASGI calls into the served app (`pipeline.serving.app.api`, as Serve runs it: its routes find their server
object through the replica context), counting every byte the app receive()s.
"""

import asyncio
import json
from types import SimpleNamespace

import pytest
from ray import serve

from pipeline.serving.access import token_digest
from pipeline.serving.app import MAX_BODY_BYTES, AdapterSetServer, api

TOKEN = "the-right-token-1234"
CHUNK = 64 * 1024


class StubPredictor:
    version, set_id, reads_images, needs_task = "2", "set", False, False

    def predict(self, inputs, top, task):
        return [SimpleNamespace(label="yes", task="t0", scores={"yes": 1.0}) for _ in inputs]


@pytest.fixture
def served(monkeypatch):
    """The app with a server object behind it, as a replica started with the token has."""
    server = object.__new__(AdapterSetServer.func_or_class.__bases__[0])  # the class as written, unwrapped
    server.token_digest, server.streams = token_digest(TOKEN), ("default",)
    server.predictors = {"default": StubPredictor()}
    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(servable_object=server))
    return server


def call(path: str, body_chunks=(), headers: dict | None = None, method: str = "POST") -> tuple[int, int]:
    """(status, bytes of the body the app received) for one request whose body arrives in these chunks."""
    chunks, received, answer = list(body_chunks), 0, {}

    async def receive():
        nonlocal received
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        received += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(api(scope, receive, send))
    return answer["status"], received


def chunked(size: int) -> list[bytes]:
    """A JSON body of `size` bytes in 64 KiB chunks, sent as chunked transfer (no Content-Length)."""
    body = b'{"text": "' + b"a" * (size - 12) + b'"}'
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CHUNKED = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}


def test_an_unauthenticated_malformed_body_gets_401_not_422(served):
    assert call("/predict", [b'{"texts": 7, "nonsense": true}'], CHUNKED) == (401, 0)
    assert call("/streams/default/predict", [b"not json at all"], CHUNKED)[0] == 401


def test_an_unauthenticated_chunked_20_mb_body_is_refused_before_a_byte_of_it_is_read(served):
    status, received = call("/predict", chunked(20 * 1024 * 1024), CHUNKED)
    assert (status, received) == (401, 0)


def test_an_authenticated_chunked_body_over_the_limit_gets_413_after_at_most_the_limit_and_one_chunk(served):
    status, received = call("/predict", chunked(20 * 1024 * 1024), BEARER | {"Transfer-Encoding": "chunked"})
    assert status == 413
    assert received <= MAX_BODY_BYTES + CHUNK
    # Under the limit the same request is answered: the guard hands on the body it read.
    assert call("/predict", chunked(MAX_BODY_BYTES - CHUNK), BEARER)[0] == 200
    assert call("/predict", [json.dumps({"texts": ["a", "b"]}).encode()], BEARER)[0] == 200


def test_the_api_browser_and_schema_are_not_found_when_a_token_is_set(served):
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert call(path, [b""], BEARER, method="GET")[0] == 404, path
        assert call(path, [b""], method="GET")[0] == 404, path
    assert call("/healthz", [b""], method="GET")[0] == 200, "liveness probes carry no token"
    assert call("/version", [b""], method="GET")[0] == 401
