"""Keep the API key out of everything batchrun writes or prints: records, logs, messages."""

from __future__ import annotations

__all__ = ["Redactor"]

_MASK = "[redacted]"
# Shorter strings (a test key "x") would mask ordinary text; real keys are far longer.
_MIN_SECRET = 8


class Redactor:
    """Replaces one secret with ``[redacted]`` in bytes and in text."""

    __slots__ = ("_secret", "_secret_bytes")

    def __init__(self, secret: str | None) -> None:
        usable = secret if secret and len(secret) >= _MIN_SECRET else ""
        self._secret = usable
        self._secret_bytes = usable.encode()

    @property
    def secret_bytes(self) -> bytes:
        return self._secret_bytes

    def data(self, line: bytes) -> bytes:
        """``line`` with the secret masked (a server may echo request headers into a body)."""
        secret = self._secret_bytes
        return line.replace(secret, _MASK.encode()) if secret and secret in line else line

    def text(self, text: str) -> str:
        return text.replace(self._secret, _MASK) if self._secret else text
