"""`ray_join.init_tolerant`: which Ray Client connect failures are retried, and how often."""

import pytest
from r1platform import ray_join

START_FAILED = ConnectionAbortedError(
    "Initialization failure from server:\nRuntimeError: Starting Ray client server failed. "
    "See ray_client_server_23000.err for detailed logs."
)


class FlakyInit:
    """ray.init stand-in: raises the queued errors in order, then connects."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return {"connected": kwargs["address"]}


def test_client_server_start_failure_is_retried_with_growing_waits():
    init, waits = FlakyInit(START_FAILED, START_FAILED), []
    got = ray_join.init_tolerant(
        "ray://head:10001", init=init, sleep=waits.append, namespace="r1p", backoff_s=2.0
    )
    assert got == {"connected": "ray://head:10001"}
    assert len(init.calls) == 3
    assert all(c == {"address": "ray://head:10001", "namespace": "r1p"} for c in init.calls)
    assert waits == [2.0, 4.0]


ZOMBIE = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File ".../ray/util/client/server/proxier.py", line 765, in Datapath\n'
    "    if not self.proxy_manager.start_specific_server(\n"
    '  File ".../ray/util/client/server/proxier.py", line 396, in start_specific_server\n'
    "    cmd = psutil_proc.cmdline()\n"
    "psutil.ZombieProcess: PID still exists but it's a zombie (pid=26274)\n"
)  # as a clean-clone `make test` met it on 2026-12-02


def test_a_client_server_that_died_while_starting_is_retried():
    init = FlakyInit(ZOMBIE)
    assert ray_join.init_tolerant("ray://head:10001", init=init, sleep=lambda s: None) == {
        "connected": "ray://head:10001"
    }
    assert len(init.calls) == 2


def test_the_last_start_failure_is_raised_as_is():
    init = FlakyInit(START_FAILED, START_FAILED, START_FAILED)
    with pytest.raises(ConnectionAbortedError, match="Starting Ray client server failed"):
        ray_join.init_tolerant("ray://head:10001", init=init, sleep=lambda s: None, attempts=3)
    assert len(init.calls) == 3


@pytest.mark.parametrize(
    ("address", "error"),
    [
        # Not Ray Client: nothing forks a per-client server, so a retry cannot help.
        ("127.0.0.1:6379", START_FAILED),
        # A real refusal (bad token, version mismatch) must surface at once.
        ("ray://head:10001", ConnectionAbortedError("Initialization failure: bad token")),
        ("ray://head:10001", ConnectionError("ray client connection timeout")),
    ],
)
def test_other_failures_are_not_retried(address, error):
    init = FlakyInit(error)
    with pytest.raises(type(error)):
        ray_join.init_tolerant(address, init=init, sleep=lambda s: None)
    assert len(init.calls) == 1
