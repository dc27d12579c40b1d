"""A bucket, through boto3 with botocore's own retries; create-once puts for immutable objects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pyarrow import fs as pafs

from pipeline.errors import UserError
from pipeline.settings import Connection

MISSING = ("NoSuchKey", "404", "NotFound")
ALREADY_EXISTS = ("PreconditionFailed", "412", "ConditionalRequestConflict")


class StorageError(RuntimeError, UserError):
    """S3 is unreachable or refused a request; the message names the bucket and key."""


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


@dataclass
class Bucket:
    name: str
    client: object

    @classmethod
    def connect(cls, conn: Connection) -> Bucket:
        client = boto3.client(
            "s3",
            endpoint_url=conn.s3_endpoint,
            aws_access_key_id=conn.access_key,
            aws_secret_access_key=conn.secret_key,
            region_name=conn.region,
            config=Config(
                retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=30
            ),
        )
        return cls(conn.bucket, client)

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    @contextmanager
    def _request(self, what: str, key: str) -> Iterator[None]:
        """One line that names the operation and the object, whatever botocore raised."""
        try:
            yield
        except ClientError as err:
            if _code(err) in MISSING:
                raise FileNotFoundError(self.uri(key)) from err
            raise StorageError(f"cannot {what} {self.uri(key)}: {err}") from err
        except BotoCoreError as err:
            raise StorageError(f"cannot {what} {self.uri(key)}: {err}") from err

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` unless it exists (If-None-Match: *). True if this call created it."""
        try:
            with self._request("write", key):
                self.client.put_object(Bucket=self.name, Key=key, Body=data, IfNoneMatch="*")
        except StorageError as err:
            if isinstance(err.__cause__, ClientError) and _code(err.__cause__) in ALREADY_EXISTS:
                return False
            raise
        return True

    def put_immutable(self, key: str, data: bytes) -> None:
        """Create a content-addressed object, or, if it exists (same key, same bytes), mark it as wanted again:
        its LastModified is what `litelora gc`'s grace period counts from."""
        if not self.put_if_absent(key, data):
            with self._request("refresh", key):
                self.client.copy_object(
                    Bucket=self.name,
                    Key=key,
                    CopySource={"Bucket": self.name, "Key": key},
                    MetadataDirective="REPLACE",
                )

    def put(self, key: str, data: bytes) -> None:
        """Plain overwrite: only for mutable, non-lineage objects (drops, quarantine reasons)."""
        with self._request("write", key):
            self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        with self._request("read", key):
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            with self._request("check", key):
                self.client.head_object(Bucket=self.name, Key=key)
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        return [obj["Key"] for obj in self.list_objects(prefix)]

    def list_objects(self, prefix: str) -> list[dict]:
        """Every object under `prefix` with its Key, LastModified (datetime) and Size."""
        objects = []
        with self._request("list", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix
            ):
                objects.extend(page.get("Contents", []))
        return objects

    def copy(self, source: str, target: str) -> None:
        with self._request(f"copy to {target}", source):
            self.client.copy_object(
                Bucket=self.name, Key=target, CopySource={"Bucket": self.name, "Key": source}
            )

    def delete_if_unchanged(self, key: str, etag: str, modified: float) -> bool:
        """Delete `key` only while it is the very object that was listed (same ETag, LastModified within the
        second that listings and HEAD may round differently): a newer upload under the same key stays. False if it
        changed or is gone."""
        try:
            with self._request("check", key):
                head = self.client.head_object(Bucket=self.name, Key=key)
        except FileNotFoundError:
            return False
        if head.get("ETag") != etag or abs(head["LastModified"].timestamp() - modified) >= 1.0:
            return False
        self.delete(key)
        return True

    def move(self, source: str, target: str) -> None:
        with self._request(f"move to {target}", source):
            self.client.copy_object(
                Bucket=self.name, Key=target, CopySource={"Bucket": self.name, "Key": source}
            )
            self.client.delete_object(Bucket=self.name, Key=source)

    def delete(self, key: str) -> None:
        with self._request("delete", key):
            self.client.delete_object(Bucket=self.name, Key=key)


def arrow_filesystem(conn: Connection) -> pafs.S3FileSystem:
    """The same bucket through pyarrow: what Ray Train and Ray Tune persist to, and how workers read parquet."""
    endpoint = (conn.s3_endpoint or "").removeprefix("http://").removeprefix("https://") or None
    scheme = "https" if (conn.s3_endpoint or "https").startswith("https") else "http"
    return pafs.S3FileSystem(
        access_key=conn.access_key,
        secret_key=conn.secret_key,
        region=conn.region,
        endpoint_override=endpoint,
        scheme=scheme,
    )
