"""What a provider's Batch API rejects in one line, checked before the line is submitted.

OpenRouter accepts a batch (202) and validates its lines afterwards: one bad line then fails the
whole batch, with nothing run (docs/batch-wire.md A3.6, A3.7). OpenAI also fails a whole batch at its
first bad line (B3). Each rule here catches one such line first, so that it becomes an
``invalid_input`` record of its own and its batch goes out without it. Pure: a body in, a
message (or None) out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["batch_problem"]

# Non-text output, speed tiers, web search: OpenRouter's batch path refuses these parameters.
_OPENROUTER_REFUSED_PARAMS = {
    "modalities": "non-text output (modalities)",
    "audio": "audio output",
    "image_config": "image output (image_config)",
    "speed": "speed",
    "web_search_options": "web search (web_search_options)",
}
_MEDIA_PARTS = {
    "input_audio": "an audio part",
    "file": "a file part",
    "video_url": "a video part",
    "input_video": "a video part",
    "audio_url": "an audio part",
}


def batch_problem(body: Mapping[str, Any], *, api: str) -> str | None:
    """Why the Batch API of ``api`` ("openrouter" or "openai") would refuse this request body.

    Returns None when the body may go in a batch. The message says what to change.
    """
    if body.get("stream") is True:
        return "stream: true is not allowed in a batch (remove stream, or run with --mode sync)"
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            return f"{key} must be at least 1 in a batch, got {value}"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty array"
    if api != "openrouter":
        return None
    model = body.get("model")
    if isinstance(model, str) and model.endswith(":online"):
        return f"the :online variant ({model}) has no batch endpoint: use the model without :online"
    if isinstance(body.get("models"), list):
        return "a models fallback list cannot go in a batch (one model per batch): remove models"
    for key, what in _OPENROUTER_REFUSED_PARAMS.items():
        if body.get(key) is not None:
            return f"{what} is not supported in a batch: remove {key} or run with --mode sync"
    plugins = body.get("plugins")
    if isinstance(plugins, list) and any(
        isinstance(p, Mapping) and p.get("id") == "web" for p in plugins
    ):
        return "the web plugin (web search) is not supported in a batch: remove it or use --mode sync"
    for index, message in enumerate(messages):
        problem = _content_problem(message.get("content") if isinstance(message, Mapping) else None)
        if problem is not None:
            return f"messages[{index}] has {problem}"
    return None


def _content_problem(content: Any) -> str | None:
    if not isinstance(content, list):
        return None
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in _MEDIA_PARTS:
            return f"{_MEDIA_PARTS[kind]}, which a batch refuses (text and public image URLs only)"
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return ("an inline (base64 or data:) image, which a batch refuses: "
                        "give a public http(s) URL instead")
    return None
