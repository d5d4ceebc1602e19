"""The sharded job's arithmetic, without a cluster: routing, resume checks, coordinator grants."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from batchrun.engine.budget import to_nano
from batchrun.errors import ResumeMismatch
from batchrun.ray.coordinator import Coordinator, Report, fair_shares, lease_size
from batchrun.ray.sharding import HASH_NAME, check_resume, manifest_entry, shard_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_shard_of_is_fixed_and_even() -> None:
    # Pinned: another hash (or Python's salted hash()) would route a resumed job differently.
    assert [shard_of(f"id-{i}", 4) for i in range(8)] == [shard_of(f"id-{i}", 4) for i in range(8)]
    assert shard_of("a1", 2) == int.from_bytes(__import__("hashlib").blake2b(b"a1", digest_size=8).digest(), "big") % 2
    counts = Counter(shard_of(f"row-{i}", 2) for i in range(20_000))
    assert abs(counts[0] - counts[1]) < 600
    assert set(Counter(shard_of(f"row-{i}", 3) for i in range(3000))) == {0, 1, 2}


@pytest.mark.parametrize(("manifest", "asked", "expected"), [
    (None, None, None),
    (None, 3, 3),
    ({"model": "m"}, 2, 2),  # made by a single-process run: any count may start sharding it
    ({"sharding": manifest_entry(2)}, None, 2),
    ({"sharding": manifest_entry(2)}, 2, 2),
    ({"sharding": manifest_entry(2)}, 3, "--shards 2"),
    ({"sharding": {"hash": "crc32", "shards": 2}}, 2, "crc32"),
])
def test_a_resume_keeps_the_shard_count(manifest, asked, expected) -> None:
    if isinstance(expected, str):
        with pytest.raises(ResumeMismatch, match=expected):
            check_resume(manifest, asked)
    else:
        assert check_resume(manifest, asked) == expected
    assert manifest_entry(4) == {"hash": HASH_NAME, "shards": 4}


@pytest.mark.parametrize(("usd", "units"), [
    (0.0, 0), (3.5e-6, 3500), (0.0005, 500_000), (1e-10, 1), (1.0, 1_000_000_000), (0.1 + 0.2, 300_000_000),
])
def test_money_in_whole_nano_dollars_rounded_up(usd: float, units: int) -> None:
    assert to_nano(usd) == units  # the coordinator's unit: a shard's reservation adds up exactly


@pytest.mark.parametrize(("rate", "shards", "size"), [
    (1000.0, 2, 75), (1.0, 2, 1), (0.1, 1, 1), (100_000.0, 2, 256), (40.0, 1, 6),
])
def test_lease_size(rate: float, shards: int, size: int) -> None:
    assert lease_size(rate, shards) == size


@pytest.mark.parametrize(("total", "demands", "shares"), [
    (64, [100, 100], [32, 32]),
    (64, [3, 100], [3, 61]),
    (5, [10, 10], [2, 3]),
    (7, [10, 1, 10], [3, 1, 3]),
    (16, [0, 0], [0, 0]),
    (16, [4, 4], [4, 4]),
])
def test_fair_shares(total: int, demands: list[int], shares: list[int]) -> None:
    assert fair_shares(total, demands) == shares
    assert sum(shares) <= total


def test_requests_in_flight_never_pass_the_window_whatever_the_order_of_calls() -> None:
    window, shards = 10, 3
    coordinator = Coordinator(shards=shards, concurrency=window)
    rng = random.Random(7)
    limit = [0] * shards
    in_use = [0] * shards
    for _ in range(3000):
        shard = rng.randrange(shards)
        # Between calls a shard uses up to its limit (or finishes some requests).
        in_use[shard] = rng.randint(0, max(limit[shard], in_use[shard]) if rng.random() < 0.5 else limit[shard])
        in_use[shard] = min(in_use[shard], max(limit[shard], in_use[shard]))
        grant = coordinator.lease(shard, Report(in_use=in_use[shard], limit_now=limit[shard],
                                                demand=rng.randint(0, 12)))
        limit[shard] = grant.limit
        # What every shard may use from now on: what it uses, or up to its new limit.
        assert sum(max(u, lim) for u, lim in zip(in_use, limit, strict=False)) <= window


def test_rate_leases_from_all_shards_are_one_evenly_spaced_sequence() -> None:
    clock = Clock()
    coordinator = Coordinator(shards=2, concurrency=64, rpm=6000, clock=clock)
    slots = []
    for call in range(20):
        grant = coordinator.lease(call % 2, Report(demand=64, want_slots=True))
        assert grant.first_slot_s is not None
        slots += [clock.now + grant.first_slot_s + i * grant.spacing_s for i in range(grant.slots)]
        clock.now += 0.003  # calls arrive faster than the slots are used
    slots.sort()
    rate = 6000 / 60 * 0.98
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) == pytest.approx(1 / rate)
    assert max(gaps) == pytest.approx(1 / rate)


def test_a_429_from_one_shard_slows_every_shard() -> None:
    clock = Clock()
    coordinator = Coordinator(shards=2, concurrency=16, rpm=6000, clock=clock)
    before = coordinator.lease(1, Report(demand=16, want_slots=True))
    for _ in range(20):
        clock.now += 0.05
        coordinator.lease(0, Report(demand=16, successes=5))
    cut = coordinator.lease(0, Report(demand=16, rate_limited=((2.0, True),)))
    after = coordinator.lease(1, Report(demand=16, want_slots=True))
    assert cut.epoch == after.epoch == before.epoch + 1  # shard 1 drops the slots it held
    assert after.rate is not None and before.rate is not None and after.rate < before.rate
    assert after.pause_s == pytest.approx(2.0)
    assert after.first_slot_s is not None and after.first_slot_s >= 2.0


def test_the_budget_is_split_by_demand_and_never_passed() -> None:
    budget, worst, actual = 1_000_000, 13_650, 3_500
    coordinator = Coordinator(shards=2, concurrency=16, budget_units=budget, spent_units=100_000)
    allowance = [0, 0]
    spent = [0, 0]
    sent = [0, 0]
    rng = random.Random(3)
    pending = [0, 0]
    out: set[int] = set()
    for _ in range(100_000):
        if len(out) == 2:
            break
        shard = rng.randrange(2)
        if shard in out:
            continue
        if allowance[shard] >= worst:
            allowance[shard] -= actual  # booked at its worst case, answered at its real price
            pending[shard] += actual
            spent[shard] += actual
            sent[shard] += 1
            continue
        grant = coordinator.lease(shard, Report(spent_units=pending[shard], returned_units=allowance[shard],
                                                want_units=worst * 4, min_units=worst))
        pending[shard] = 0
        allowance[shard] = grant.granted_units
        if grant.budget == "out":
            out.add(shard)
        assert coordinator.spent_units + sum(allowance) <= budget
    assert out == {0, 1}
    assert 100_000 + sum(spent) <= budget
    assert budget - (100_000 + sum(spent)) < worst  # stopped only when the next worst case did not fit
    assert sent[0] > 0 and sent[1] > 0


def test_a_dead_shards_allowance_counts_as_spent() -> None:
    coordinator = Coordinator(shards=2, concurrency=4, budget_units=100)
    grant = coordinator.lease(0, Report(want_units=60, min_units=10))
    assert grant.granted_units == 60
    assert coordinator.lease(1, Report(want_units=60, min_units=10)).granted_units == 40
    coordinator.forget(0)
    assert coordinator.spent_units == 60
    refused = coordinator.lease(0, Report(want_units=60, min_units=10))
    assert refused.granted_units == 0 and refused.budget == "wait"  # shard 1 may still give some back
    coordinator.lease(1, Report(returned_units=40))
    assert coordinator.lease(0, Report(want_units=60, min_units=10)).granted_units == 40
    assert coordinator.lease(1, Report(want_units=60, min_units=10)).budget == "wait"
    coordinator.lease(0, Report(spent_units=40))
    assert coordinator.lease(1, Report(want_units=60, min_units=10)).budget == "out"


def test_ray_and_shards_from_the_job_file_the_flags_and_the_api(tmp_path, monkeypatch) -> None:
    from batchrun.api import _config
    from batchrun.config import load_config
    from batchrun.errors import ConfigError

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "prompt": "hi"}\n')
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{source}"\nray = "auto"\nshards = 3\n')
    config = load_config(job)
    assert (config.ray_address, config.shards) == ("auto", 3)
    assert load_config(job, {"ray_address": "10.0.0.5:6379"}).ray_address == "10.0.0.5:6379"
    assert _config(source, {"ray_address": "auto", "shards": 2}).shards == 2
    with pytest.raises(ConfigError, match="shards needs ray"):
        _config(source, {"shards": 2})
    with pytest.raises(ConfigError, match="shards must be a whole number"):
        _config(source, {"ray_address": "auto", "shards": 0})


def test_ray_missing_is_one_line_saying_what_to_install(monkeypatch) -> None:
    import sys

    from batchrun.errors import ConfigError
    from batchrun.ray.cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # not a local cluster: no token is set
    with pytest.raises(ConfigError, match=r"pip install 'batchrun\[ray\]'"):
        import_ray("auto")


def test_the_core_never_imports_ray() -> None:
    import subprocess
    import sys

    probe = "import sys, batchrun, batchrun.cli, batchrun.api; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
