"""Real SeaweedFS + MLflow processes for the integration tests: started once per session on free loopback
ports in a temporary state directory, stopped by PID afterwards."""

import signal
import uuid

import pytest

from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.registry.bucket import Bucket
from pipeline.settings import connection, load_settings
from pipeline.stack import embedded
from pipeline.stack.process import free_port


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("litelora-home")
    # A killed test run (SIGTERM from CI or a timeout) must still stop the servers it started.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    _, started = embedded.up(home, ports={"s3": free_port(), "mlflow": free_port()})
    assert started
    try:
        yield home
    finally:
        embedded.down(home)
        signal.signal(signal.SIGTERM, previous)


def use_stack(env: pytest.MonkeyPatch, home) -> None:
    """The environment a user gets from `eval "$(litelora env)"`, plus LITELORA_HOME."""
    env.setenv("LITELORA_HOME", str(home))
    for key, value in embedded.env_exports(home).items():
        env.setenv(key, value)


def own_bucket(env: pytest.MonkeyPatch):
    """A new bucket and registered model, made the configured ones; their connection."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    env.setenv("LITELORA_BUCKET", name)
    env.setenv("LITELORA_REGISTERED_MODEL", name)
    conn = connection(load_settings())
    Bucket.connect(conn).client.create_bucket(Bucket=name)
    return conn


@pytest.fixture
def stack_env(stack_home, monkeypatch):
    use_stack(monkeypatch, stack_home)
    return stack_home


@pytest.fixture
def conn(stack_env, monkeypatch):
    """A bucket and a registered model of this test's own, on the session's stack."""
    return own_bucket(monkeypatch)


@pytest.fixture(scope="session")
def session_conn(stack_home):
    """A bucket and a registered model this test process's tests share: for state built once (by session fixtures)
    and only read. A test that uses it through the environment asks for `session_env`."""
    with pytest.MonkeyPatch.context() as env:
        use_stack(env, stack_home)
        return own_bucket(env)


@pytest.fixture
def session_env(session_conn, stack_env, monkeypatch):
    """The environment of `eval "$(litelora env)"` with the shared bucket and registered model configured."""
    monkeypatch.setenv("LITELORA_BUCKET", session_conn.bucket)
    monkeypatch.setenv("LITELORA_REGISTERED_MODEL", session_conn.registered_model)
    return session_conn


@pytest.fixture(scope="session")
def wordnet_drops(tmp_path_factory):
    """The five Split-WordNet-20 CI tasks cut to a quarter, as validated drops named wn-t0 … wn-t4."""
    root = tmp_path_factory.mktemp("wordnet-drops")
    tasks = split_wordnet20(1993, "ci")
    for t in tasks:
        t.train_inputs, t.train_labels = t.train_inputs[::4], t.train_labels[::4]
        t.test_inputs, t.test_labels = t.test_inputs[::4], t.test_labels[::4]
    return [TaskDataset.from_dir(write_drop(t, root / f"t{i}"), name=f"wn-t{i}") for i, t in enumerate(tasks)]


@pytest.fixture(scope="session")
def ray_node(stack_home):
    """One local Ray node for the session, started from the main thread (where Ray installs its handlers)."""
    import ray

    from pipeline.orchestrator.ray_node import init_ray

    init_ray(stack_home)
    try:
        yield
    finally:
        ray.shutdown()
