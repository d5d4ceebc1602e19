"""What the Batch APIs' second stage would refuse, caught per line before submitting (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.batch.checks import batch_problem

_TEXT = [{"role": "user", "content": "hi"}]


def _image(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "see"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.mark.parametrize(("body", "api", "needle"), [
    ({"model": "m", "messages": _TEXT}, "openrouter", None),
    ({"model": "m", "messages": _TEXT, "stream": True}, "openrouter", "stream"),
    ({"model": "m", "messages": _TEXT, "stream": True}, "openai", "stream"),
    ({"model": "m", "messages": _TEXT, "stream": False}, "openrouter", None),
    ({"model": "m", "messages": _TEXT, "max_tokens": 0}, "openrouter", "max_tokens"),
    ({"model": "m", "messages": _TEXT, "max_completion_tokens": 0}, "openai", "max_completion_tokens"),
    ({"model": "m", "messages": _TEXT, "max_tokens": 1}, "openrouter", None),
    ({"model": "m", "messages": []}, "openrouter", "non-empty"),
    ({"model": "m"}, "openai", "non-empty"),
    ({"model": "m", "messages": _image("https://example.com/a.png")}, "openrouter", None),
    ({"model": "m", "messages": _image("data:image/png;base64,iVBORw0K")}, "openrouter", "inline"),
    ({"model": "m", "messages": _image("iVBORw0KGgo=")}, "openrouter", "base64"),
    ({"model": "m", "messages": _image("data:image/png;base64,iVBORw0K")}, "openai", None),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}, "openrouter", "audio"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "x"}}]}]}, "openrouter", "file"),
    ({"model": "openai/gpt-4o:online", "messages": _TEXT}, "openrouter", ":online"),
    ({"model": "m", "messages": _TEXT, "models": ["a", "b"]}, "openrouter", "models"),
    ({"model": "m", "messages": _TEXT, "modalities": ["image", "text"]}, "openrouter", "modalities"),
    ({"model": "m", "messages": _TEXT, "plugins": [{"id": "web"}]}, "openrouter", "web"),
    ({"model": "m", "messages": _TEXT, "web_search_options": {}}, "openrouter", "web_search_options"),
])
def test_batch_problem(body: dict[str, Any], api: str, needle: str | None) -> None:
    problem = batch_problem(body, api=api)
    if needle is None:
        assert problem is None
    else:
        assert problem is not None and needle in problem
