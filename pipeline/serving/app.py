"""`litelora serve`: a Ray Serve deployment answering predictions with the adapter set under `current`.

It polls `current` (registry/pointer.py) and, when it moves (a new version, a rollback), loads the new set beside
the old one and swaps one reference: a request takes the predictor once, so requests in flight finish on the
set they started with and no request fails during a swap.

    POST /predict  {"text": "…"} or {"texts": ["…", …]}, optional "top", "version", "task"  → label, task, scores
    GET  /healthz  GET /version

With a token (serving/access.py), every path but /healthz needs `Authorization: Bearer <token>` (401 without, before
any body is read: serving/guard.py) and FastAPI's /docs, /redoc and /openapi.json are not found; /healthz stays open
for liveness probes. Every body is bounded as it arrives, chunked or not.
"""

import base64
import binascii
import logging
import threading
import time

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.config import HTTPOptions

from pipeline import PRODUCT
from pipeline.errors import JobFailed
from pipeline.registry.lineage import LineageError, parse_version
from pipeline.registry.store import Registry
from pipeline.serving.access import check_listening
from pipeline.serving.guard import RequestGuard
from pipeline.serving.predictor import BadRequest, Predictor
from pipeline.settings import Connection

MAX_BODY_BYTES = 4 * 1024 * 1024
log = logging.getLogger("litelora.serve")
api = FastAPI(title="LiteLoRA adapter-set server")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    texts: list[str] | None = None
    image: str | None = None
    """A base64 PNG/JPEG, for a set on a vision backbone (415 from a text set, as texts are from an image set)."""
    images: list[str] | None = None
    top: int = Field(3, ge=1, le=1000)
    version: str | None = None
    """Answer only if this version is the one being served (409 otherwise)."""
    task: str | None = None
    """Score only this task's classes; a Share set needs it (422 without), as it keeps a delta per task."""


def inputs_of(body: PredictRequest, reads_images: bool) -> list[str] | list[bytes]:
    """The request's texts, or its images decoded from base64; the other kind is refused with 415."""
    texts = body.texts if body.texts is not None else ([body.text] if body.text is not None else [])
    images = body.images if body.images is not None else ([body.image] if body.image is not None else [])
    if reads_images and texts:
        raise HTTPException(
            415, 'this adapter set\'s backbone reads images; send "image" or "images" (base64)'
        )
    if not reads_images and images:
        raise HTTPException(415, 'this adapter set\'s backbone reads text; send "text" or "texts"')
    if not reads_images:
        return texts
    try:
        return [base64.b64decode(i, validate=True) for i in images]
    except binascii.Error as error:
        raise HTTPException(422, f"an image that is not valid base64: {error}") from None


def _replica_token_digest() -> str | None:
    # The replica's own server object, found as Serve finds a route's `self`.
    return serve.get_replica_context().servable_object.token_digest


# Before @serve.ingress, which freezes a copy of the app: the guard runs before routing and body parsing.
api.add_middleware(RequestGuard, token_digest=_replica_token_digest, max_body_bytes=MAX_BODY_BYTES)


@serve.deployment(max_ongoing_requests=32)
@serve.ingress(api)
class AdapterSetServer:  # (no `from __future__ import annotations`: FastAPI must see real types)
    """Each served stream's set under `current` (or one pinned version): the first stream answers at /predict and
    /version, every stream at /streams/<stream>/predict and /streams/<stream>/version."""

    def __init__(
        self,
        conn: Connection,
        poll_s: float = 2.0,
        version: str | None = None,
        token_digest: str | None = None,
        streams: tuple[str, ...] = (),
    ):
        # Read by the RequestGuard in front of every route, per request.
        self.token_digest = token_digest
        self.poll_s = poll_s
        self.streams = streams or (conn.stream,)
        self.conns = {stream: conn.for_stream(stream) for stream in self.streams}
        self.predictors = {s: Predictor.from_registry(c, version) for s, c in self.conns.items()}
        self.following = version is None  # a pinned version never moves
        self.swaps = dict.fromkeys(self.streams, 0)
        self.last_poll_error = dict.fromkeys(self.streams, "")
        if self.following:
            threading.Thread(target=self._follow_current, name="follow-current", daemon=True).start()

    def _follow_current(self) -> None:
        pointers = {stream: Registry.connect(conn).pointer for stream, conn in self.conns.items()}
        while True:
            time.sleep(self.poll_s)
            for stream, pointer in pointers.items():
                try:
                    now = pointer.version(reconcile=False)  # replicas read; promoters and rollbacks write
                    if now is not None and now != self.predictors[stream].version:
                        fresh = Predictor.from_registry(
                            self.conns[stream], now
                        )  # loaded off the request path
                        self.predictors[stream] = fresh
                        self.swaps[stream] += 1
                        log.warning("%s: now serving v%s", stream, fresh.version)
                    self.last_poll_error[stream] = ""
                except Exception as error:  # noqa: BLE001 - MLflow or S3 away: keep serving the set we have
                    self.last_poll_error[stream] = f"{type(error).__name__}: {error}"

    def _served(self, stream: str) -> str:
        if stream not in self.predictors:
            raise HTTPException(
                404, f"stream {stream!r} is not served here; served: {', '.join(self.streams)}"
            )
        return stream

    def _predict(self, stream: str, body: PredictRequest) -> dict:
        predictor = self.predictors[
            stream
        ]  # one read: this request finishes on this set, whatever swaps meanwhile
        if body.version is not None:
            try:
                asked = parse_version(body.version)
            except LineageError as error:
                raise HTTPException(422, str(error)) from None
            if asked != predictor.version:
                raise HTTPException(
                    409,
                    f"v{asked} is not being served; this server serves v{predictor.version} (the set under "
                    "`current`)",
                )
        try:
            predictions = predictor.predict(
                inputs_of(body, predictor.reads_images), top=body.top, task=body.task
            )
        except BadRequest as error:
            raise HTTPException(413 if "at most" in str(error) else 422, str(error)) from None
        return {"version": predictor.version, "predictions": [p.__dict__ for p in predictions]}

    def _version(self, stream: str) -> dict:
        p = self.predictors[stream]
        return {
            "stream": stream,
            "version": p.version,
            "set_id": p.set_id,
            "tasks": [t.name for t in p.model.tasks],
            "method": p.model.config.method,
            "needs_task": p.needs_task,
            "following_current": self.following,
            "swaps": self.swaps[stream],
            "poll_s": self.poll_s,
            "last_poll_error": self.last_poll_error[stream],
        }

    @api.post("/predict")
    def predict(self, body: PredictRequest) -> dict:
        return self._predict(self.streams[0], body)

    @api.post("/streams/{stream}/predict")
    def predict_stream(self, stream: str, body: PredictRequest) -> dict:
        return self._predict(self._served(stream), body)

    @api.get("/healthz")
    def healthz(self) -> dict:
        versions = {stream: p.version for stream, p in self.predictors.items()}
        return {"status": "ok", "version": versions[self.streams[0]], "streams": versions}

    @api.get("/version")
    def version(self) -> dict:
        return self._version(self.streams[0])

    @api.get("/streams/{stream}/version")
    def stream_version(self, stream: str) -> dict:
        return self._version(self._served(stream))


def run_server(
    conn: Connection,
    host: str = "127.0.0.1",
    port: int = 8000,
    poll_s: float = 2.0,
    version: str | None = None,
    replicas: int = 1,
    token_digest: str | None = None,
    streams: tuple[str, ...] = (),
) -> tuple[str, int]:
    """Start Ray Serve (in the local or `RAY_ADDRESS` Ray) and deploy; returns, once the app is healthy, the host
    and port its proxy really listens on (a Serve already running keeps its own)."""
    from pipeline.orchestrator.ray_node import init_ray

    init_ray(conn.cache_dir.parent)
    serve.start(http_options={"host": host, "port": port})
    listening = proxy_http_options()
    check_listening(
        listening.host, asked=host, guarded=token_digest is not None
    )  # before anything is deployed
    serve.run(
        AdapterSetServer.options(num_replicas=replicas).bind(conn, poll_s, version, token_digest, streams),
        name=PRODUCT,
        route_prefix="/",
    )
    return listening.host, listening.port


def proxy_http_options() -> HTTPOptions:
    """The HTTP options Serve's proxies run with. On a cluster where Serve already runs, `serve.start` keeps them
    and only logs a warning about the ones it was given; its own check compares against these."""
    from ray.serve.context import _get_global_client

    return _get_global_client().http_config


def serve_until_stopped(
    conn: Connection,
    host: str,
    port: int,
    poll_s: float,
    version: str | None,
    replicas: int,
    on_ready=lambda host, port: None,
    token_digest: str | None = None,
    streams: tuple[str, ...] = (),
) -> None:
    """Check each stream has a set to serve (before Ray Serve retries a replica that cannot load), serve them, and
    block until SIGINT or SIGTERM; then remove our app only (on a shared cluster other Serve apps keep running)."""
    import signal

    import ray

    if version and len(streams) > 1:
        raise ValueError("--version pins one stream's set: serve one stream with it")
    for stream in streams or (conn.stream,):
        registry = Registry.connect(conn.for_stream(stream))
        if (registry.lineage.get(version) if version else registry.current()) is None:
            raise LineageError(
                f"no adapter set is `current` in stream {stream!r} yet: train and register a task first"
            )
    try:
        listening = run_server(conn, host, port, poll_s, version, replicas, token_digest, streams)
    except RuntimeError as e:  # a replica that failed to start: its last line says why
        raise JobFailed((str(e).strip().splitlines() or [type(e).__name__])[-1]) from None
    on_ready(*listening)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ray's own SIGINT handling would leave the server up
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.delete(PRODUCT)
    ray.shutdown()
