"""The one place that reads the environment: `LITELORA_*`, the standard AWS/MLflow variables, offline defaults.

Connection settings come from the environment (`eval "$(litelora env)"`, or AWS S3 / a shared MLflow server);
when they are absent and the embedded stack (`litelora up`) is running, its endpoints and keys are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import UserError

REGISTERED_MODEL = "litelora-adapter-set"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LITELORA_", extra="ignore")

    home: Path = Path.home() / ".litelora"
    """State directory: embedded stack data, logs, credentials, local cache."""
    device: str = "auto"
    """auto = CUDA when present, else CPU."""
    head: str | None = None
    """Head option of a new lineage's first set (later sets keep their parent's): ridge, linear, prototype,
    aligned, calibrated; None = the default of TrainConfig."""
    bucket: str | None = None
    s3_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("LITELORA_S3_ENDPOINT", "AWS_ENDPOINT_URL")
    )
    access_key: str | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    secret_key: str | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    mlflow_uri: str | None = Field(None, validation_alias="MLFLOW_TRACKING_URI")
    mlflow_username: str | None = Field(None, validation_alias="MLFLOW_TRACKING_USERNAME")
    mlflow_password: str | None = Field(None, validation_alias="MLFLOW_TRACKING_PASSWORD")
    registered_model: str = REGISTERED_MODEL
    """Name of the MLflow registered model holding the default stream's adapter-set versions; another stream's
    is `<name>-<stream>`."""
    stream: str = "default"
    """The stream (independent lineage) a command works on when it is not given --stream."""
    debug: bool = False
    """Show a command's traceback instead of its one-line error."""
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    """The Ray cluster to join (None: a node of our own on loopback)."""
    serve_token_file: Path | None = None
    """`litelora serve --token-file`: the bearer token clients must send (needed beyond loopback)."""
    state_key: SecretStr | None = None
    """Key of the MACs on the state the service writes and reads back (a resumable search's trial records);
    unset: a random key kept in <home>/state-key. On a cluster, a Secret, so a restarted head keeps it."""


@dataclass(frozen=True)
class Connection:
    """Where adapter sets, datasets and lineage live."""

    s3_endpoint: str | None
    access_key: str | None
    secret_key: str | None = field(repr=False)
    region: str
    bucket: str
    mlflow_uri: str
    registered_model: str
    """The stream's registered model."""
    cache_dir: Path
    stream: str = "default"
    base_model: str = ""
    """The default stream's registered model, from which every stream's name is derived."""
    mlflow_username: str | None = None
    mlflow_password: str | None = field(default=None, repr=False)
    """MLflow's login (the embedded stack's admin, or MLFLOW_TRACKING_*): MLflow's client reads it only from
    the environment, so `export_mlflow_login` puts it there, in each process that talks to MLflow."""

    def export_mlflow_login(self) -> None:
        """Where MLflow's client looks for a login: this process's environment (Ray workers get the
        connection, not the driver's environment)."""
        if self.mlflow_username and self.mlflow_password:
            os.environ["MLFLOW_TRACKING_USERNAME"] = self.mlflow_username
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self.mlflow_password

    def without_keys(self) -> Connection:
        """What may travel in a Ray job's config (Ray shows it in its dashboard): everything but the S3 keys and
        MLflow's password, which a worker finds itself (`with_keys`)."""
        return replace(self, access_key=None, secret_key=None, mlflow_password=None)

    def for_stream(self, stream: str) -> Connection:
        from pipeline.registry.streams import registered_model_of

        base = self.base_model or self.registered_model
        return replace(
            self, registered_model=registered_model_of(base, stream), stream=stream, base_model=base
        )


class NotConfigured(RuntimeError, UserError):
    """Neither the environment nor a running embedded stack says where S3 and MLflow are."""


def connection(settings: Settings | None = None, stream: str | None = None) -> Connection:
    """Where the lineage of `stream` (default: LITELORA_STREAM, else `default`) lives."""
    from pipeline.stack.embedded import MLFLOW_USERNAME, Credentials, StackState

    settings = settings or load_settings()
    s3, key, secret = settings.s3_endpoint, settings.access_key, settings.secret_key
    bucket, mlflow_uri = settings.bucket, settings.mlflow_uri
    mlflow_user, mlflow_password = settings.mlflow_username, settings.mlflow_password
    if not (bucket and mlflow_uri):
        state = StackState.load(settings.home)
        if state is None or not state.alive():
            raise NotConfigured(
                "no S3 bucket / MLflow server configured: run `litelora up` (embedded stack) or set "
                "LITELORA_BUCKET, MLFLOW_TRACKING_URI and AWS_* variables"
            )
        creds = Credentials.load_or_create(settings.home)
        s3, key, secret = s3 or state.s3_endpoint, key or creds.access_key, secret or creds.secret_key
        if not mlflow_user and mlflow_uri in (None, state.mlflow_uri):  # the stack's MLflow: its admin login
            mlflow_user, mlflow_password = MLFLOW_USERNAME, creds.mlflow_password
        bucket, mlflow_uri = bucket or state.bucket, mlflow_uri or state.mlflow_uri
    conn = Connection(
        s3,
        key,
        secret,
        settings.region,
        bucket,
        mlflow_uri,
        settings.registered_model,
        settings.home / "cache",
        mlflow_username=mlflow_user,
        mlflow_password=mlflow_password,
    ).for_stream(stream or settings.stream)
    conn.export_mlflow_login()
    return conn


def with_keys(conn: Connection) -> Connection:
    """A Ray worker's connection (`Connection.without_keys` travelled): the S3 keys and MLflow's password from its
    environment (AWS_*, MLFLOW_TRACKING_PASSWORD: a node's or the job's runtime env), else from this installation's
    credentials file when the worker runs beside the embedded stack, else none (boto3 and pyarrow then use the
    node's instance profile)."""
    from pipeline.stack.embedded import MLFLOW_USERNAME, Credentials

    settings, home = load_settings(), conn.cache_dir.parent
    creds = Credentials.load_or_create(home) if (home / "credentials.json").exists() else None
    key, secret = conn.access_key, conn.secret_key
    if not key:
        key, secret = (
            (settings.access_key, settings.secret_key)
            if settings.access_key
            else (creds.access_key, creds.secret_key)
            if creds
            else (None, None)
        )
    password = conn.mlflow_password or settings.mlflow_password
    if not password and creds and conn.mlflow_username == MLFLOW_USERNAME:
        password = creds.mlflow_password
    return replace(conn, access_key=key, secret_key=secret, mlflow_password=password)


def apply_offline_defaults() -> None:
    """Models and data load from local files: never let transformers reach for a hub at run time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")
    for var in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        os.environ.setdefault(var, "true")
    # stdout is for our own (often --json) output; MLflow's "View run at" lines would corrupt it.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's client retries for minutes by default; an unreachable server should fail within seconds.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_settings() -> Settings:
    apply_offline_defaults()
    return Settings()
