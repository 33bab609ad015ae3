"""Output streams that a closed reader cannot break: ``aekit train … 2>&1 | head -1`` keeps training.

When the reader of a pipe goes away, the next write raises ``BrokenPipeError`` (Python ignores SIGPIPE), and an
uncaught one would end the process between two epochs. :func:`survive_closed_streams` wraps ``sys.stdout`` and
``sys.stderr`` so that such a write goes quiet instead: the stream is marked lost and later writes are dropped,
while the work (training, evaluating, writing files) goes on to its normal end.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator
from typing import TextIO


class QuietWhenClosed(io.TextIOBase):
    """A text stream that forwards to ``stream`` until a write or flush finds its reader gone, then drops."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                self.stream.write(text)
            except (BrokenPipeError, ValueError, OSError) as err:  # ValueError: written after close
                self._lose(err)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError) as err:
                self._lose(err)

    def _lose(self, err: Exception) -> None:
        if isinstance(err, OSError) and not isinstance(err, BrokenPipeError) and err.errno not in (errno.EPIPE,
                                                                                                   errno.EINVAL):
            raise err
        self.lost = True
        try:  # what is still buffered would fail again when Python flushes at exit (exit status 120): drop it
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def isatty(self) -> bool:
        return not self.lost and self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def survive_closed_streams() -> Iterator[None]:
    """Within the block, ``sys.stdout`` and ``sys.stderr`` go quiet instead of failing when their reader closes."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = QuietWhenClosed(sys.stdout), QuietWhenClosed(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
