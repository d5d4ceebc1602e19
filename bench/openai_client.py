"""What users write instead: the openai SDK, a semaphore and one gather over every line.

``AsyncOpenAI(base_url=..., api_key="x", max_retries=0)``, ``asyncio.Semaphore(C)`` and
``asyncio.gather`` of one coroutine per input line, each reply written as one JSON line. It runs
on asyncio's default loop, as such scripts do. Usage:
``python -m bench.openai_client INPUT OUTPUT BASE_URL CONCURRENCY``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

from openai import AsyncOpenAI

_MODEL = "google/gemini-2.0-flash-lite-001"


async def _one(
    client: AsyncOpenAI, semaphore: asyncio.Semaphore, row: dict[str, Any], out: TextIO
) -> None:
    async with semaphore:
        reply = await client.chat.completions.create(
            model=_MODEL, messages=row["messages"], max_tokens=row["max_tokens"]
        )
    out.write(json.dumps({"custom_id": row["custom_id"], "response": reply.model_dump()}) + "\n")


async def run(input_path: str, output_path: str, base_url: str, concurrency: int) -> None:
    """Send every line of ``input_path`` with at most ``concurrency`` requests in flight."""
    client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)
    with open(input_path) as source:
        rows = [json.loads(line) for line in source if line.strip()]
    with open(output_path, "w") as out:
        await asyncio.gather(*(_one(client, semaphore, row, out) for row in rows))
    await client.close()


def main() -> None:
    """Command-line entry point."""
    input_path, output_path, base_url, concurrency = sys.argv[1:5]
    asyncio.run(run(input_path, output_path, base_url, int(concurrency)))


if __name__ == "__main__":
    main()
