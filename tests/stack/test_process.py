"""`down` stops exactly what `up` started: processes are recognised by PID *and* start time."""

import sys
from dataclasses import replace

import pytest

from pipeline.stack.process import (
    PortTaken,
    ServerProcess,
    StackError,
    pick_port,
    port_is_free,
    start,
    wait_healthy,
)


def _sleeper(tmp_path) -> ServerProcess:
    return start(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "logs", tmp_path
    )


def test_stop_ends_the_process_we_started_and_logs_go_to_the_state_dir(tmp_path):
    proc = _sleeper(tmp_path)
    assert proc.alive() and (tmp_path / "logs" / "sleeper.log").exists()
    proc.stop(timeout=5)
    assert not proc.alive()


def test_a_recorded_pid_that_now_belongs_to_another_process_is_left_alone(tmp_path):
    proc = _sleeper(tmp_path)
    try:
        impostor = replace(proc, create_time=proc.create_time - 3600)  # same PID, different process
        assert not impostor.alive()
        impostor.stop()
        assert proc.alive()
    finally:
        proc.stop(timeout=5)


def test_a_server_that_dies_during_start_up_reports_its_log(tmp_path):
    proc = start(
        "crasher",
        [sys.executable, "-c", "print('bad flag -x'); raise SystemExit(3)"],
        {},
        tmp_path / "logs",
        tmp_path,
    )
    with pytest.raises(StackError, match="bad flag -x"):
        wait_healthy(proc, lambda: False, timeout=10)


def test_a_busy_preferred_port_is_replaced_by_a_free_one():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert not port_is_free(busy)
        port = pick_port(busy, set())
        assert port != busy and port_is_free(port)


def test_a_port_whose_last_connections_linger_in_time_wait_is_free():
    import socket

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as SeaweedFS (Go) and uvicorn bind
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end of the connection lingers in TIME_WAIT
        client.close()
    assert port_is_free(port)


def test_a_server_is_healthy_only_while_it_holds_its_port_itself(tmp_path):
    import socket

    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        proc = _sleeper(tmp_path)  # alive, but not listening: whatever answers on the port is not it
        try:
            with pytest.raises(StackError, match="not healthy"):
                wait_healthy(proc, lambda: True, timeout=1.5, port=port)
        finally:
            proc.stop(timeout=5)


def test_a_server_that_lost_its_port_in_a_race_says_so(tmp_path):
    proc = start(
        "loser",
        [sys.executable, "-c", "print('bind: address already in use'); raise SystemExit(1)"],
        {},
        tmp_path / "logs",
        tmp_path,
    )
    with pytest.raises(PortTaken) as taken:
        wait_healthy(proc, lambda: False, timeout=10, port=5000)
    assert (taken.value.server, taken.value.port) == ("loser", 5000)
