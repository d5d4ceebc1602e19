"""fdlimit.py: the open-file decision as a table, and EMFILE turned into a clean stop."""

from __future__ import annotations

import errno

import pytest

from batchrun.errors import ErrorKind
from batchrun.fdlimit import MARGIN, FilePlan, is_too_many_files, needed, plan
from batchrun.transport import _failure


@pytest.mark.parametrize(
    ("concurrency", "soft", "hard", "expected"),
    [
        pytest.param(16, 1024, 4096, FilePlan(None, 16), id="enough-already"),
        pytest.param(960, 1024, 4096, FilePlan(None, 960), id="exactly-enough"),
        pytest.param(961, 1024, 4096, FilePlan(961 + MARGIN, 961), id="one-more-raises"),
        pytest.param(3000, 1024, 20000, FilePlan(3064, 3000), id="raise-to-what-is-needed"),
        pytest.param(5000, 1024, None, FilePlan(5064, 5000), id="unlimited-hard"),
        pytest.param(5000, None, None, FilePlan(None, 5000), id="unlimited-soft"),
        pytest.param(3000, 1024, 3064, FilePlan(3064, 3000), id="hard-just-enough"),
    ],
)
def test_plan_raises_the_soft_limit_up_to_the_hard_one(
    concurrency: int, soft: int | None, hard: int | None, expected: FilePlan
) -> None:
    assert plan(concurrency, soft, hard) == expected


@pytest.mark.parametrize(
    ("concurrency", "soft", "hard", "set_soft", "connections"),
    [
        pytest.param(1000, 256, 256, None, 256 - MARGIN, id="soft-is-hard"),
        pytest.param(5000, 1024, 4096, 4096, 4096 - MARGIN, id="raise-to-hard-then-cap"),
        pytest.param(100, 16, 16, None, 1, id="never-below-one"),
    ],
)
def test_plan_caps_connections_when_the_hard_limit_is_too_low(
    concurrency: int, soft: int, hard: int, set_soft: int | None, connections: int
) -> None:
    decision = plan(concurrency, soft, hard)
    assert (decision.soft, decision.connections) == (set_soft, connections)
    assert decision.notice is not None
    assert f"ulimit -n {needed(concurrency)}" in decision.notice
    assert f"{connections:,} connections" in decision.notice and "\n" not in decision.notice


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.EMFILE, "Too many open files"), True),
        (OSError(errno.ENFILE, "Too many open files in system"), True),
        (OSError(errno.ECONNREFUSED, "Connection refused"), False),
        (ValueError("no"), False),
    ],
)
def test_is_too_many_files(exc: BaseException, expected: bool) -> None:
    assert is_too_many_files(exc) is expected


def test_a_socket_that_cannot_be_opened_stops_the_job() -> None:
    failure = _failure(OSError(errno.EMFILE, "Too many open files"), 300)
    assert failure is not None
    assert failure.kind == ErrorKind.CONNECTION_ERROR and failure.stops_job
    assert "ulimit -n" in failure.message and "run again" in failure.message
    refused = _failure(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), 300)
    assert refused is not None and not refused.stops_job
