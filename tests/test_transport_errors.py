"""transport.EXCEPTION_MAP: every low-level exception a request can meet becomes one failure kind.

After httpx's test that every httpcore exception is mapped: each exception aiohttp can raise while
sending a request, and the OS and timeout errors beneath it, finds an entry of the table, and the
common ones give the kind, the flags and the message a user should see.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from batchrun.errors import ErrorKind, TransportFailure
from batchrun.transport import EXCEPTION_MAP, _failure, translate_errors

_KEY = ConnectionKey("api.example.test", 443, True, True, None, None, None)


def _aiohttp_exceptions() -> list[type[BaseException]]:
    return [
        value for value in vars(aiohttp).values()
        if inspect.isclass(value) and issubclass(value, aiohttp.ClientError)
    ]


@pytest.mark.parametrize("exception", _aiohttp_exceptions(), ids=lambda c: c.__name__)
def test_every_aiohttp_client_error_is_in_the_map(exception: type[BaseException]) -> None:
    assert any(issubclass(exception, kind) for kind, _ in EXCEPTION_MAP)


@pytest.mark.parametrize(
    ("exc", "kind", "stops_job", "no_answer", "says"),
    [
        (asyncio.TimeoutError(), ErrorKind.TIMEOUT, False, False, "no complete answer within 30 s"),
        (aiohttp.ClientPayloadError("cut"), ErrorKind.CONNECTION_ERROR, False, False, "cut off"),
        (aiohttp.ServerDisconnectedError(), ErrorKind.CONNECTION_ERROR, False, False, "closed the connection"),
        (aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
         ErrorKind.CONNECTION_ERROR, False, True, "cannot connect"),
        (aiohttp.ClientConnectorError(_KEY, OSError(errno.EMFILE, "Too many open files")),
         ErrorKind.CONNECTION_ERROR, True, False, "cannot open a connection"),
        (aiohttp.ClientConnectorCertificateError(_KEY, ssl.SSLCertVerificationError("self-signed")),
         ErrorKind.CONNECTION_ERROR, True, False, "SSL_CERT_FILE"),
        (aiohttp.ClientProxyConnectionError(_KEY, OSError(errno.ECONNREFUSED, "refused")),
         ErrorKind.CONNECTION_ERROR, False, True, "NO_PROXY"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), ErrorKind.CONNECTION_ERROR, False, False, "reset"),
        (OSError(errno.EMFILE, "Too many open files"), ErrorKind.CONNECTION_ERROR, True, False, "ulimit -n"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_a_failure_of_each_kind(
    exc: BaseException, kind: str, stops_job: bool, no_answer: bool, says: str
) -> None:
    failure = _failure(exc, 30.0)
    assert failure is not None
    assert (failure.kind, failure.stops_job, failure.no_answer) == (kind, stops_job, no_answer)
    assert says in failure.message


def test_other_exceptions_pass_through_and_failures_keep_their_cause() -> None:
    assert _failure(ValueError("a bug"), 1.0) is None
    with pytest.raises(ValueError, match="a bug"), translate_errors(1.0):
        raise ValueError("a bug")
    cause = aiohttp.ServerDisconnectedError()
    with pytest.raises(TransportFailure) as caught, translate_errors(1.0):
        raise cause
    assert caught.value.__cause__ is cause  # the aiohttp cause stays in a developer's traceback
