"""The benchmark's HTTP downloads (BENCHMARK_GCS_URL or a run's ``url``), streamed with httpx.

A download never holds more than the sender's buffer (``StreamedPayload.room``) or one chunk:
either it feeds a UDP run as the bytes arrive, or it goes to a file (a QUIC run announces the
size and SHA-256 first, so it sends the file once it is complete). Every failure is a
``DownloadError`` whose reason names the URL and what went wrong, for the UI.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from protocol.benchmark.payload import StreamedPayload

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # between two chunks of the body
ROOM_POLL = 0.005  # how often a download waits for the paced sender to take more


class DownloadError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Download:
    url: str
    response: httpx.Response
    total: int | None  # Content-Length, when the server sends one
    received: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_bytes():
                self.received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise DownloadError(f"download of {self.url} broke off after {self.received} "
                                f"bytes: {describe(exc)}") from None
        if self.total is not None and self.received != self.total:
            raise DownloadError(f"download of {self.url} ended after {self.received} of "
                                f"{self.total} bytes")


@asynccontextmanager
async def download(url: str) -> AsyncIterator[Download]:
    """An open download whose headers have arrived; raises DownloadError."""
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise DownloadError(f"download of {url} failed: HTTP {response.status_code} "
                                    f"{response.reason_phrase}")
            length = response.headers.get("content-length", "")
            yield Download(url, response, int(length) if length.isdigit() else None)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise DownloadError(f"download of {url} failed: {describe(exc)}") from None


async def feed(source: Download, payload: StreamedPayload, stop: Callable[[], bool]) -> None:
    """The body into ``payload`` as the sender makes room, until the end (or ``stop()``)."""
    async for chunk in source.chunks():
        for start in range(0, len(chunk), 64 * 1024):
            part = chunk[start:start + 64 * 1024]
            while payload.room() < len(part):
                if stop():
                    return
                await asyncio.sleep(ROOM_POLL)
            payload.feed(part)
    payload.end()


async def to_file(source: Download, path: str) -> bytes:
    """The body into ``path``; its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        async for chunk in source.chunks():
            digest.update(chunk)
            out.write(chunk)
    return digest.digest()


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
