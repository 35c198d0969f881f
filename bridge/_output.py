"""A child's output on the loop: bounded capture, ``on_line`` lines, and the pipes.

:class:`Capture` keeps the first ``max_output`` bytes of one stream (the rest is
discarded and ``truncated`` says so, so memory stays bounded for a child that
prints forever) and hands complete lines to ``on_line``, splitting one longer
than :data:`LINE_LIMIT`. :class:`PipeReader` and :class:`PipeWriter` move bytes
through a non-blocking pipe with the loop's ``add_reader`` / ``add_writer``:
no transport, no protocol, no task per stream.

Everything here runs on the loop thread; nothing knows the bridge or the child.
"""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import Callable
from typing import Final, final

__all__ = ["CHUNK", "LINE_LIMIT", "Capture", "OnLine", "PipeReader", "PipeWriter"]

#: ``on_line`` receives lines of at most this many bytes; longer ones are split.
LINE_LIMIT: Final = 64 * 1024
#: The most one read takes from a pipe.
CHUNK: Final = 64 * 1024

OnLine = Callable[[str, str], object]


@final
class Capture:
    """One output stream: the first *limit* bytes, and its lines for ``on_line``."""

    __slots__ = ("_decoder", "_limit", "_name", "_on_line", "_partial", "data", "truncated")

    def __init__(self, name: str, limit: int, on_line: OnLine | None) -> None:
        self._name = name
        self._limit = limit
        self._on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = bytearray()  # the current line, for on_line
        self.data = bytearray()
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        """Take one chunk read from the stream; raises what ``on_line`` raised."""
        self._keep(chunk)
        if self._on_line is not None:
            self._lines(chunk)

    def finish(self) -> None:
        """The stream reached EOF: hand over the last line if it had no newline."""
        if self._on_line is not None and self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            self._emit(line)

    def _keep(self, chunk: bytes) -> None:
        room = self._limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        if chunk:
            self.data += chunk

    def _lines(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._add(chunk[start : end + 1])
            line = bytes(self._partial)
            self._partial.clear()
            self._emit(line)
            start = end + 1
        self._add(chunk[start:])

    def _add(self, piece: bytes) -> None:
        """Append to the current line; emit 64 KiB pieces of an over-long one."""
        self._partial += piece
        while len(self._partial) > LINE_LIMIT:
            line = bytes(self._partial[:LINE_LIMIT])
            del self._partial[:LINE_LIMIT]
            self._emit(line)

    def _emit(self, line: bytes) -> None:
        text = self._decoder.decode(line)
        assert self._on_line is not None
        self._on_line(self._name, text.rstrip("\r\n") if text.endswith("\n") else text)


@final
class PipeReader:
    """Reads the pipe *fd* (which it owns) into a :class:`Capture`. Loop thread.

    ``done`` resolves at EOF, or fails with what ``on_line`` raised (reading
    stops then). :meth:`close` stops reading and closes the pipe, at any time.
    """

    __slots__ = ("_capture", "_fd", "_loop", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, capture: Capture) -> None:
        self._loop = loop
        self._fd = fd
        self._capture = capture
        self.done: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""  # the pipe broke: as good as EOF
        try:
            if chunk:
                self._capture.feed(chunk)
                return
            self._stop()
            self._capture.finish()
        except Exception as error:  # noqa: BLE001 - on_line's error fails the job
            self._stop()
            if not self.done.done():
                self.done.set_exception(error)
            return
        if not self.done.done():
            self.done.set_result(None)

    def _stop(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Stop reading and close the pipe (a process outside the group may hold it)."""
        self._stop()
        if not self.done.done():
            self.done.cancel()


@final
class PipeWriter:
    """Writes *data* to the pipe *fd* (which it owns), then closes it. Loop thread.

    A child that does not read its input is not an error (as with
    :func:`subprocess.run`): ``done`` resolves once the data is written or the
    child closed its end.
    """

    __slots__ = ("_data", "_fd", "_loop", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self._loop = loop
        self._fd = fd
        self._data = memoryview(data)
        self.done: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        self._writable(first=True)

    def _writable(self, first: bool = False) -> None:
        try:
            while self._data:
                self._data = self._data[os.write(self._fd, self._data) :]
        except (BlockingIOError, InterruptedError):
            if first:
                self._loop.add_writer(self._fd, self._writable)
            return
        except OSError:
            pass  # BrokenPipeError and the like: the child does not read its input
        if not self.done.done():
            self.done.set_result(None)
        self.close()

    def close(self) -> None:
        """Stop writing and close the pipe (the child sees EOF). Idempotent."""
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)
            os.close(self._fd)
            self._fd = -1
        if not self.done.done():
            self.done.cancel()
