"""idset.py: an exact id set, compact for ids that end in a number (docs/design.md §1: ≤ ~32 bytes per id)."""

from __future__ import annotations

import random
import tracemalloc
import uuid
from collections.abc import Callable, Iterable

import orjson
import pytest

from batchrun.idset import IdSet
from batchrun.records import InputParser, InvalidLine, Request

# -- membership, shape by shape ------------------------------------------------------------------

LONG = "x" * 10_000


@pytest.mark.parametrize(
    ("added", "absent"),
    [
        # the common shapes: a text prefix and a number
        ([f"p{i}" for i in range(1, 1000)], ["p0", "p1000", "p01", "P1", "p", "q1", "p1 "]),
        ([f"line-{i}" for i in range(1, 300)], ["line-0", "line-300", "line-01", "line+1", "line1"]),
        (["request-1", "request-2", "request-10"], ["request-3", "request-01", "request-"]),
        ([f"r{i:04d}" for i in range(200)], ["r42", "r042", "r00042", "r0200", "r-001"]),
        ([f"a{i:04d}" for i in range(1, 10_000, 7)], ["a0002", "a2", "a02", "a002", "a10000"]),
        ([f"t{i}" for i in range(2, 500)], ["t1", "t0", "t500", "t02"]),
        # one number, three ids: the leading zeros are part of the id
        (["a42"], ["a042", "a0042", "a4", "a2", "42", "aa42"]),
        (["a042"], ["a42", "a0042", "a04", "a0"]),
        (["a0042", "a42"], ["a042", "a00042"]),
        # ids that are only digits, and the empty id
        (["0", "7", "42", "042", "0042", "100", "123456789"], ["", "00", "4", "0042 ", "1234567890"]),
        ([""], ["0", "00", " "]),
        # digits of other scripts are not ASCII digits: never the same id as an ASCII one
        (["a٤٢", "r４２", "x²", "٤٢"], ["a42", "r42", "x2", "42", "a٤", "٢"]),
        (["a42"], ["a٤٢", "a４２", "a4٢"]),
        # signs, and the str() of int ids
        (["+5", "-5", "a-42", "a+42", str(-57), str(10**30)], ["5", "a42", "57", "-57 ", str(10**30 + 1)]),
        # very long ids and numbers
        ([LONG + "42", LONG + "43", "9" * 5000], [LONG + "4", LONG + "042", "9" * 4999, "9" * 5001]),
        # shapes kept as str: UUIDs, hashes, text, trailing letters
        (["550e8400-e29b-41d4-a716-446655440000", "f" * 64, "hello", "p12a"],
         ["550e8400-e29b-41d4-a716-446655440001", "p12", "hell", "p12b"]),
    ],
)
def test_members_are_exactly_the_ids_added(added: list[str], absent: list[str]) -> None:
    ids = IdSet(added)
    assert len(ids) == len(set(added))
    assert all(custom_id in ids for custom_id in added)
    assert not any(custom_id in ids for custom_id in absent)
    assert sorted(ids) == sorted(set(added))
    assert ids == set(added)


@pytest.mark.parametrize("custom_id", ["p42", "p7", "hello", "", "42", "a٤٢", "r0000"])
def test_add_and_discard_say_whether_the_id_was_there(custom_id: str) -> None:
    ids = IdSet()
    assert (ids.add(custom_id), ids.add(custom_id), len(ids)) == (True, False, 1)
    assert ids and custom_id in ids
    assert (ids.discard(custom_id), ids.discard(custom_id), len(ids)) == (True, False, 0)
    assert not ids and custom_id not in ids


def test_other_types_are_not_members() -> None:
    ids = IdSet(["42", "a42"])
    assert 42 not in ids and None not in ids and b"a42" not in ids


def test_a_copy_is_independent() -> None:
    ids = IdSet(f"p{i}" for i in range(500))
    twin = ids.copy()
    assert twin.discard("p42") and twin.add("p500") and twin.add("hello")
    assert "p42" in ids and "p500" not in ids and "hello" not in ids
    assert len(ids) == 500 and len(twin) == 501


def test_a_chunk_made_later_takes_its_earlier_ids_in() -> None:
    ids = IdSet(["r1200"])  # the chunk's first id waits in the set of str
    assert ids.add("r1201") and not ids.add("r1200") and not ids.add("r1201")
    assert ids.discard("r1200") and "r1200" not in ids and "r1201" in ids and len(ids) == 1


# -- exactness: agrees with a set on every query -----------------------------------------------------


def _random_id(rng: random.Random) -> str:
    shape = rng.randrange(6)
    if shape == 0:
        return str(uuid.UUID(int=rng.getrandbits(128)))
    if shape == 1:
        return f"{rng.choice(['', 'a', 'a0', 'p', 'line-', '٤', '+', '-'])}{rng.randrange(3000)}"
    if shape == 2:
        width = rng.randrange(1, 7)
        return f"{rng.choice(['a', 'r', 't'])}{rng.randrange(10 ** min(width, 4)):0{width}d}"
    if shape == 3:
        return f"evt-{1_700_000_000_000 + rng.randrange(10**9)}"  # sparse: timestamps
    if shape == 4:
        return "".join(rng.choice("0123456789٤٢x") for _ in range(rng.randrange(4)))
    return f"{rng.choice('ab')}{rng.randrange(100)}{rng.choice(['', '٤', '٢', 'x'])}"


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_a_set_on_random_mixes(seed: int) -> None:
    rng = random.Random(seed)
    ids, expected = IdSet(), set()
    for _ in range(20_000):
        custom_id = _random_id(rng)
        action = rng.random()
        if action < 0.5:
            assert ids.add(custom_id) == (custom_id not in expected)
            expected.add(custom_id)
        elif action < 0.6:
            assert ids.discard(custom_id) == (custom_id in expected)
            expected.discard(custom_id)
        else:
            assert (custom_id in ids) == (custom_id in expected)
    assert len(ids) == len(expected) and set(ids) == expected
    twin = ids.copy()
    assert all(custom_id in twin for custom_id in expected) and twin == expected


def test_agrees_with_a_set_after_its_watch_list_starts_over() -> None:
    # Sparse ids fill the list of chunks waiting for a second id until it is cleared; chunks made
    # after that must still take in every id of theirs kept as str, and lose none.
    rng = random.Random(7)
    ids, expected = IdSet(), set()
    sparse = [f"evt-{1_700_000_000_000 + 1000 * i}" for i in range(20_000)]
    early = [f"q{rng.randrange(100_000):05d}" for _ in range(3_000)]
    for custom_id in early + sparse + [f"q{i:05d}" for i in range(100_000)]:
        assert ids.add(custom_id) == (custom_id not in expected)
        expected.add(custom_id)
    probes = [f"q{i:05d}" for i in range(0, 100_000, 7)] + [f"q{i}" for i in range(500)] + sparse[::97]
    assert all((custom_id in ids) == (custom_id in expected) for custom_id in probes)
    assert len(ids) == len(expected) and set(ids) == expected


# -- memory ------------------------------------------------------------------------------------------


def _bytes_per_id(make: Callable[[], Iterable[str]]) -> float:
    """Memory the set holds per id, the ids made on the fly (so a kept str counts)."""
    tracemalloc.start()
    try:
        ids = IdSet()
        for custom_id in make():
            ids.add(custom_id)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held / len(ids)


def test_a_million_numbered_ids_take_under_32_bytes_each() -> None:
    # Measured: about 2.3 bytes per id (a set of these str takes about 89).
    assert _bytes_per_id(lambda: (f"p{i}" for i in range(1_000_000))) <= 32


@pytest.mark.parametrize(
    "make",
    [
        lambda: (f"a{i:07d}" for i in range(100_000)),
        lambda: (f"line-{i}" for i in random.Random(1).sample(range(100_000), 100_000)),
        lambda: (f"t{10 * i}" for i in range(100_000)),  # every tenth number: about 23 bytes
    ],
    ids=["zero-padded", "shuffled", "every-tenth"],
)
def test_other_numbered_shapes_take_under_32_bytes_each(make: Callable[[], Iterable[str]]) -> None:
    assert _bytes_per_id(make) <= 32


@pytest.mark.parametrize(
    "make",
    [
        lambda: (f"evt-{1_700_000_000_000 + 977 * i}" for i in range(50_000)),
        lambda: (str(uuid.UUID(int=rng.getrandbits(128))) for rng in [random.Random(1)] for _ in range(50_000)),
    ],
    ids=["timestamps", "uuids"],
)
def test_sparse_ids_cost_about_what_a_set_costs(make: Callable[[], Iterable[str]]) -> None:
    tracemalloc.start()
    try:
        plain = set(make())
        set_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _bytes_per_id(make) <= 1.2 * set_bytes / len(plain)


# -- the parser's use: skipped ids are looked up once, duplicates still found ---------------------


@pytest.mark.parametrize(
    ("skip", "lines", "expected"),
    [
        (set(), ["a1", "a2", "a1"], ["sent", "sent", "duplicate"]),
        ({"a1", "a2"}, ["a1", "a2", "a3"], ["skipped", "skipped", "sent"]),
        ({"a1"}, ["a1", "a1", "a2", "a2"], ["skipped", "duplicate", "sent", "duplicate"]),
        ({"r0042"}, ["r42", "r042", "r0042", "r0042"], ["sent", "sent", "skipped", "duplicate"]),
        (IdSet(f"p{i}" for i in range(300)), ["p7", "p300", "p7", "p300"],
         ["skipped", "sent", "duplicate", "duplicate"]),
    ],
)
def test_parser_skips_each_skipped_id_once(skip: set[str] | IdSet, lines: list[str], expected: list[str]) -> None:
    parser = InputParser(model="m", params={}, skip_ids=skip)
    outcomes = []
    for number, custom_id in enumerate(lines, 1):
        item = parser.parse(orjson.dumps({"id": custom_id, "prompt": "x"}), number)
        if item is None:
            outcomes.append("skipped")
        elif isinstance(item, InvalidLine):
            assert item.message.startswith("duplicate id")
            outcomes.append("duplicate")
        else:
            assert isinstance(item, Request)
            outcomes.append("sent")
    assert outcomes == expected
    assert isinstance(skip, set) or len(skip) == 300  # the caller's set is left as it was
