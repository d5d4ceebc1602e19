"""The input as batches: parse each line, check it against the Batch API's rules, split into chunks.

The same ``InputParser`` as the sync mode builds each request, so ids, defaults, templates and
bad lines are the same in both modes. A line the Batch API would refuse (``checks``) or that is
too big for any batch becomes an ``invalid_input`` record, and its batch goes out without it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from batchrun.batch.checks import batch_problem
from batchrun.batch.plan import BatchItem, BatchLimits, Chunk, Splitter, group_key
from batchrun.config import JobConfig
from batchrun.engine.budget import ASSUMED_UNBOUNDED_OUTPUT, estimate_cost
from batchrun.engine.preflight import parser_for
from batchrun.errors import ErrorKind
from batchrun.inputs import iter_lines, open_input
from batchrun.pricing import Price
from batchrun.records import InvalidLine, error_record

__all__ = ["ChunkReader", "PlanCount"]


@dataclass
class PlanCount:
    """What a reading found besides its chunks: for the plan line and the summary."""

    expected_usd: float = 0.0  # the estimate at the batch price (as ``batchrun estimate`` makes it)
    high_usd: float = 0.0  # ... if every reply used max_tokens
    unbounded: int = 0  # requests without max_tokens or without a price
    unavailable: int = 0  # requests for a model with no batch endpoint: not sent


class ChunkReader:
    """Reads a job's input into the chunks still to send, in input order."""

    def __init__(
        self, config: JobConfig, *, api: str, limits: BatchLimits, keeps_model: bool,
        skip_ids: Collection[str], held: Container[str], unavailable: Container[str],
        price_of: Callable[[str], Price | None],
    ) -> None:
        """``held``: ids in batches that may still complete (never read into a new one);
        ``unavailable``: models with no batch endpoint; both are read live, as the run goes."""
        self._config = config
        self._api = api
        if config.max_batch_requests is not None:
            limits = replace(limits, max_requests=min(limits.max_requests, config.max_batch_requests))
        self.limits = limits
        self._keeps_model = keeps_model
        self._skip_ids = skip_ids
        self._held = held
        self._unavailable = unavailable
        self._price_of = price_of

    def chunks(
        self, count: PlanCount, *, only: Mapping[str, tuple[int, float]] | None = None,
        on_invalid: Callable[[dict[str, Any]], None] | None = None,
    ) -> Iterator[Chunk]:
        """The chunks; ``only``: just these ids, with (attempts, billed) so far (a later round).

        ``on_invalid`` gets the error record of each bad line (the first round only: a plan, or
        a later round, passes None and nothing is written twice).
        """
        config = self._config
        parser = parser_for(config, skip_ids=self._skip_ids)
        splitter = Splitter(self._api, self.limits)
        read = 0
        with open_input(config.input) as stream:
            for line, raw in iter_lines(stream):
                if config.limit is not None and read >= config.limit:
                    break
                read += 1
                item = parser.parse(raw, line)
                if item is None:
                    continue
                if isinstance(item, InvalidLine):
                    if on_invalid is not None:
                        on_invalid(error_record(item.custom_id, item.line, ErrorKind.INVALID_INPUT,
                                                item.message, metadata=item.metadata))
                    continue
                if (only is not None and item.custom_id not in only) or item.custom_id in self._held:
                    continue
                if item.model in self._unavailable:
                    count.unavailable += 1
                    continue
                body = orjson.loads(item.body)
                problem = batch_problem(body, api=self._api)
                if problem is None and not self._keeps_model:
                    body.pop("model", None)  # the model goes once, at the top (batch-wire A3.3)
                wire = item.body if self._keeps_model else orjson.dumps(body)
                attempts, billed = (only or {}).get(item.custom_id, (0, 0.0))
                batch_item = BatchItem(item.custom_id, line, wire, item.model, attempts, item.metadata,
                                       billed_usd=billed)
                if problem is None and not splitter.fits_alone(batch_item):
                    problem = (f"the request is {len(wire):,} bytes: too large for one batch "
                               f"(at most {splitter.limits.max_bytes:,} bytes)")
                if problem is not None:
                    if on_invalid is not None:
                        on_invalid(error_record(item.custom_id, line, ErrorKind.INVALID_INPUT, problem,
                                                metadata=item.metadata))
                    continue
                price = self._price_of(item.model)
                if price is not None:
                    cost = estimate_cost(item.prompt_tokens_est, item.max_tokens, price,
                                         unbounded_output=ASSUMED_UNBOUNDED_OUTPUT)
                    count.expected_usd += cost.expected
                    count.high_usd += cost.high
                if price is None or item.max_tokens is None:
                    count.unbounded += 1
                else:
                    # An upper bound, as in sync mode: no tokenizer makes more tokens than bytes.
                    batch_item.worst_usd = price.cost(len(item.body), item.max_tokens)
                closed = splitter.add(group_key(item.model, body), batch_item)
                if closed is not None:
                    yield closed
        yield from splitter.flush()
