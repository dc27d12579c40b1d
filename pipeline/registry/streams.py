"""Streams: independent lineages in one bucket and one MLflow server.

A stream has its own registered model (so its own versions, `current`, plots and promotion races), its own arrival
order, and one backbone, fixed by its first drop. Adapter sets and datasets stay content-addressed and shared: the
same bytes are stored once whatever stream uses them, and the ledger is keyed by content, which includes the
stream a drop names.

    streams/<stream>.json    {"stream", "registered_model", "backbone", "created"}, created once by the first drop

A drop names its stream and, for a new stream, its backbone in `task.json`; without them it belongs to the
`default` stream, whose registered model is the configured one (LITELORA_REGISTERED_MODEL).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from pipeline.data.stream_names import DEFAULT_STREAM, STREAM_NAME, StreamError, check_stream_name
from pipeline.learn.backbone import DEFAULT_BACKBONE, BackboneConfig, UnknownBackbone, check_backbone_name

RECORDS = "streams/"
__all__ = ["DEFAULT_STREAM", "StreamError", "StreamRecord", "Streams", "registered_model_of"]


def registered_model_of(base: str, stream: str) -> str:
    """The MLflow registered model of `stream`: the configured name for the default stream, `<base>-<stream>`
    otherwise (so existing deployments keep their model)."""
    return base if stream == DEFAULT_STREAM else f"{base}-{check_stream_name(stream)}"


@dataclass(frozen=True)
class StreamRecord:
    stream: str
    registered_model: str
    backbone: str
    created: float

    @property
    def reads_images(self) -> bool:
        return BackboneConfig(name=self.backbone).reads_images


class Streams:
    """The streams of one bucket: their records, created once and never rewritten."""

    def __init__(self, bucket, base_model: str):
        self.bucket, self.base_model = bucket, base_model

    def get(self, stream: str) -> StreamRecord | None:
        """The stream's record; None for a stream no drop has created (the default stream before a drop chose
        its backbone)."""
        try:
            return StreamRecord(**json.loads(self.bucket.get(f"{RECORDS}{check_stream_name(stream)}.json")))
        except FileNotFoundError:
            return None

    def admit(self, stream: str, backbone: str | None, reads_images: bool) -> StreamRecord:
        """The record of the stream a drop names, created if the stream is new (with the drop's `backbone`, or the
        default text encoder). Refused with what to do: a backbone other than the stream's (a lineage cannot change
        encoders), or inputs the stream's backbone cannot read."""
        record = self.get(stream)
        if record and backbone and backbone != record.backbone:
            raise StreamError(
                f"stream {stream!r} uses backbone {record.backbone!r} (set by its first drop); drop a task for "
                f"{backbone!r} into another stream"
            )
        try:
            chosen = record or StreamRecord(
                stream,
                registered_model_of(self.base_model, stream),
                check_backbone_name(backbone or DEFAULT_BACKBONE),
                time.time(),
            )
        except UnknownBackbone as unknown:
            raise StreamError(str(unknown)) from unknown
        if chosen.reads_images != reads_images:
            held, other = ("images", "text") if reads_images else ("text", "images")
            example = (
                '{"stream": "images", "backbone": "efficientnet-lite0"}'
                if reads_images
                else '{"stream": "text"}'
            )
            raise StreamError(
                f"this drop holds {held}, and stream {stream!r} reads {other} with {chosen.backbone!r}: name another "
                f"stream in task.json, e.g. {example}"
            )
        if record is None and (stream != DEFAULT_STREAM or backbone):
            # Create-once: of two watchers creating one stream, the first record stands for both. The default
            # stream needs no record unless its first drop chose a backbone.
            self.bucket.put_if_absent(f"{RECORDS}{stream}.json", json.dumps(asdict(chosen)).encode())
            record = self.get(stream)
        return record or chosen

    def names(self) -> list[str]:
        """Every stream: the default one first, then those drops created, by name."""
        found = {k[len(RECORDS) : -len(".json")] for k in self.bucket.list(RECORDS) if k.endswith(".json")}
        return [DEFAULT_STREAM, *sorted(n for n in found if STREAM_NAME.match(n) and n != DEFAULT_STREAM)]
