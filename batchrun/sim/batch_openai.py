"""OpenAI's Batch API (batch-wire Part B): files, batches, output and error files (in progress)."""

from __future__ import annotations

from aiohttp import web

from .batch_store import BatchStore
from .config import SimConfig
from .received import ReceivedLog

__all__ = ["OpenAIBatches"]


class OpenAIBatches:
    """The aiohttp handlers of OpenAI's file and batch routes over a BatchStore."""

    def __init__(self, config: SimConfig, store: BatchStore, received: ReceivedLog) -> None:
        self.config = config
        self.store = store
        self.received = received

    async def _todo(self, request: web.Request) -> web.Response:
        return web.Response(status=501, text="not implemented yet")

    upload = list_files = get_file = file_content = delete_file = _todo
    create = list = get = cancel = _todo
