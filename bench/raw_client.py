"""The practical limit: a minimal aiohttp loop with no limiter, no retries and no ledger.

C workers share one line iterator over the JSONL input (orjson), each POSTs its line's chat body
on one ClientSession (connector limit C), parses the reply with orjson and appends one orjson line
per reply to the output. It raises its own soft open-file limit to the hard one first, as a
careful script would, so thousands of connections fit under a shell's ``ulimit -n 1024``.
Usage: ``python -m bench.raw_client INPUT OUTPUT URL CONCURRENCY``.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Iterator
from typing import BinaryIO

import aiohttp
import orjson

_MODEL = "google/gemini-2.0-flash-lite-001"
_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer x"}


async def _worker(
    session: aiohttp.ClientSession, url: str, lines: Iterator[bytes], out: BinaryIO
) -> None:
    for line in lines:
        row = orjson.loads(line)
        body = {"model": _MODEL, "messages": row["messages"], "max_tokens": row["max_tokens"]}
        async with session.post(url, data=orjson.dumps(body)) as response:
            raw = await response.read()
            status = response.status
        record = {"custom_id": row["custom_id"], "status": status, "response": orjson.loads(raw)}
        out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))


async def run(input_path: str, output_path: str, url: str, concurrency: int) -> None:
    """Send every line of ``input_path`` with ``concurrency`` requests in flight."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=_HEADERS) as session:
        with open(input_path, "rb") as source, open(output_path, "wb") as out:
            lines = iter(source)
            await asyncio.gather(*(_worker(session, url, lines, out) for _ in range(concurrency)))


def main() -> None:
    """Command-line entry point."""
    input_path, output_path, url, concurrency = sys.argv[1:5]
    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))

    uvloop.run(run(input_path, output_path, url, int(concurrency)))


if __name__ == "__main__":
    main()
