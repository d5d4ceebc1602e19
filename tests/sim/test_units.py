"""Pure pieces of the simulator: fault specs, header formats, token math and the rate window."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.sim import SimConfig, parse_faults
from batchrun.sim.faults import find_marker
from batchrun.sim.limits import RateWindow
from batchrun.sim.replies import prompt_tokens
from batchrun.sim.wire import format_retry_after, go_duration

_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["429=0.02", "500=0.01"], {"429": 0.02, "500": 0.01}),
        (["error_200=0.5"], {"error200": 0.5}),
        ([], {}),
    ],
)
def test_parse_faults(specs: list[str], expected: dict[str, float]) -> None:
    assert parse_faults(specs) == expected


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("429", "KIND=RATE"),
        ("teapot=0.1", "unknown kind"),
        ("500=1.5", "between 0 and 1"),
        ("500=-0.1", "between 0 and 1"),
        ("500=abc", "not a number"),
    ],
)
def test_parse_faults_rejects(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_faults([spec])


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="add up"):
        SimConfig(faults={"500": 0.6, "502": 0.6})
    with pytest.raises(ValueError, match="dialect"):
        SimConfig(dialect="grpc")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"), [(1.0, "1"), (0.05, "0.05"), (2.5, "2.5"), (0.0001, "0.001"), (0, "0")]
)
def test_format_retry_after(seconds: float, text: str) -> None:
    assert format_retry_after(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1.0, "1s"), (360.0, "6m0s"), (0.012, "12ms"), (17.203, "17.203s"), (3723, "1h2m3s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


@pytest.mark.parametrize(
    ("texts", "marker"),
    [
        (["x [[sim:500*2]] y"], ("500", 2)),
        (["[[sim:drop]]"], ("drop", None)),
        (["[[sim:nope]]", "[[sim:torn]]"], ("torn", None)),
        (["nothing here"], None),
    ],
)
def test_find_marker(texts: list[str], marker: tuple[str, int | None] | None) -> None:
    assert find_marker(texts) == marker


def test_prompt_tokens_rule() -> None:
    msgs = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcde"}]
    assert prompt_tokens(msgs) == (1 + 3) + (2 + 3)


def test_rate_window_is_sliding() -> None:
    w = RateWindow(rpm=120, tpm=None, window_s=1.0)  # two per second
    assert w.admit(0.0, 1).allowed and w.admit(0.4, 1).allowed
    refused = w.admit(0.5, 1)
    assert not refused.allowed and refused.wait_s == pytest.approx(0.5)
    assert w.admit(1.0, 1).allowed  # the t=0 request left the window
    assert not w.admit(1.2, 1).allowed
    assert w.admit(1.4, 1).allowed


def test_exports_are_complete_and_sorted() -> None:
    import batchrun.sim as sim

    # Order is ruff's RUF022 (constants, classes, functions); here: unique and all present.
    assert len(set(sim.__all__)) == len(sim.__all__)
    assert all(hasattr(sim, name) for name in sim.__all__)


def test_sim_does_not_import_the_cli_stack() -> None:
    import subprocess
    import sys

    code = "import sys, batchrun.sim; assert not {'typer', 'tqdm'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_ROOT))
