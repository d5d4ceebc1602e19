"""Which shard an id belongs to: a keyed, fixed hash, the same on every process and machine.

Python's ``hash()`` is salted per process, so it cannot route ids across machines or runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from batchrun.errors import ResumeMismatch

__all__ = ["HASH_NAME", "check_resume", "manifest_entry", "shard_of"]

HASH_NAME = "blake2b-64(custom_id) mod shards"


def shard_of(custom_id: str, shards: int) -> int:
    """The shard (0..shards-1) that runs ``custom_id``."""
    digest = hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def manifest_entry(shards: int) -> dict[str, Any]:
    """What the manifest records of the sharding, so that a resume can check it."""
    return {"hash": HASH_NAME, "shards": shards}


def check_resume(manifest: Mapping[str, Any] | None, asked: int | None) -> int | None:
    """The shard count a resume must use: the manifest's; refuse another one.

    Returns None when neither the output nor the flags fix it (the cluster's size decides).
    """
    recorded = (manifest or {}).get("sharding")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("shards"), int):
        return asked
    if recorded.get("hash") != HASH_NAME:
        raise ResumeMismatch(
            f"the output was sharded by {recorded.get('hash')!r}, this batchrun shards by "
            f"{HASH_NAME!r}: choose another output with -o"
        )
    shards = int(recorded["shards"])
    if asked is not None and asked != shards:
        raise ResumeMismatch(
            f"the output was made with --shards {shards}: resume it with --shards {shards} "
            "(or without --shards), or choose another output with -o"
        )
    return shards
