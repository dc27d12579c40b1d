"""A bucket, through boto3 with botocore's own retries; create-once puts for immutable objects."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.settings import Connection


class StorageError(RuntimeError):
    """S3 is unreachable or refused a request; the message names the bucket and key."""


@dataclass
class Bucket:
    name: str
    client: object

    @classmethod
    def connect(cls, conn: Connection) -> Bucket:
        client = boto3.client(
            "s3", endpoint_url=conn.s3_endpoint, aws_access_key_id=conn.access_key,
            aws_secret_access_key=conn.secret_key, region_name=conn.region,
            config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=30),
        )
        return cls(conn.bucket, client)

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` unless it exists (If-None-Match: *). True if this call created it."""
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise StorageError(f"cannot write {self.uri(key)}: {err}") from err
        except BotoCoreError as err:
            raise StorageError(f"cannot write {self.uri(key)}: {err}") from err

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(self.uri(key)) from err
            raise StorageError(f"cannot read {self.uri(key)}: {err}") from err
        except BotoCoreError as err:
            raise StorageError(f"cannot read {self.uri(key)}: {err}") from err

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.name, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise StorageError(f"cannot check {self.uri(key)}: {err}") from err
        except BotoCoreError as err:
            raise StorageError(f"cannot check {self.uri(key)}: {err}") from err

    def list(self, prefix: str) -> list[str]:
        return [obj["Key"] for obj in self.list_objects(prefix)]

    def list_objects(self, prefix: str) -> list[dict]:
        """Every object under `prefix` with its Key, LastModified (datetime) and Size."""
        objects = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
                objects.extend(page.get("Contents", []))
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"cannot list {self.uri(prefix)}: {err}") from err
        return objects

    def put(self, key: str, data: bytes) -> None:
        """Plain overwrite: only for mutable, non-lineage objects (drops, quarantine reasons)."""
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=data)
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"cannot write {self.uri(key)}: {err}") from err

    def move(self, source: str, target: str) -> None:
        try:
            self.client.copy_object(Bucket=self.name, Key=target, CopySource={"Bucket": self.name, "Key": source})
            self.client.delete_object(Bucket=self.name, Key=source)
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"cannot move {self.uri(source)} to {target}: {err}") from err

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"cannot delete {self.uri(key)}: {err}") from err
