"""The report's latency marks: the p50, p95 and p99 labels never print over one another."""

from __future__ import annotations

import random
import re

import pytest

from batchrun.report import ReportData, _latency_chart

# An 11 px bold label: at most ~7 px per character; a row of text needs 14 px not to touch the next.
CHAR_W, ROW_H = 7.0, 14

_LABEL = re.compile(
    r'<text x="([\d.]+)" y="(\d+)" text-anchor="(start|end)" style="fill:#243447[^>]*>(p\d\d [^<]*)</text>'
)


def labels(latencies: list[float]) -> list[tuple[float, float, int, str]]:
    """(left, right, baseline, text) of each mark label in the latency chart."""
    data = ReportData()
    for value in latencies:
        data.latency.append(value)
    out = []
    for x, y, anchor, text in _LABEL.findall(_latency_chart(data)):
        width = len(text) * CHAR_W
        left = float(x) if anchor == "start" else float(x) - width
        out.append((left, left + width, int(y), text))
    return out


rng = random.Random(7)


@pytest.mark.parametrize("latencies", [
    pytest.param([0.5 + rng.random() * 0.01 for _ in range(1000)] + [3.0] * 5, id="all-three-together"),
    pytest.param([1.0] * 90 + [2.0] * 10, id="p95-is-p99-at-the-right-edge"),
    pytest.param([rng.gauss(2, 0.3) for _ in range(1000)], id="p95-close-to-p99"),
    pytest.param([rng.expovariate(1) for _ in range(1000)], id="spread-out"),
])
def test_mark_labels_do_not_overlap(latencies: list[float]) -> None:
    placed = labels(latencies)
    assert [text.split()[0] for *_, text in placed] == ["p50", "p95", "p99"]
    for i, (left, right, y, text) in enumerate(placed):
        assert left >= 0 and right <= 560, text  # inside the chart
        for other_left, other_right, other_y, other in placed[i + 1:]:
            if left < other_right and other_left < right:  # side by side: on rows apart
                assert abs(y - other_y) >= ROW_H, (text, other)


def test_labels_that_have_room_share_the_first_row() -> None:
    placed = labels([rng.expovariate(1) for _ in range(1000)])
    assert len({y for *_, y, _ in placed}) == 1
