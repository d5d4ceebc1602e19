"""Batch mode: a job through the provider's Batch API (OpenRouter's or OpenAI's) at the batch price.

Modules: ``checks`` (lines a Batch API would refuse), ``plan`` (grouping and splitting on the wire
bytes), ``journal`` (what was submitted, fsynced before each POST), ``openrouter`` / ``openai`` (the
wire), ``collect`` (rows to outcomes, the bill shared over rows), ``runner`` (the loop).
"""

from __future__ import annotations

from batchrun.config import JobConfig

__all__ = ["batch_api"]


def batch_api(config: JobConfig) -> str:
    """Which Batch API the job's server speaks: "openrouter" or "openai"."""
    if config.use_sim:
        return "openai" if config.sim.get("dialect") == "openai" else "openrouter"
    return "openrouter" if config.speaks_openrouter else "openai"
