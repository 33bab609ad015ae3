"""``aekit serve``: a latent-space explorer in the browser.

A local web app over one model and its test images: the latent map (the latent itself, or the PCA plane of
the codes) where any position decodes live, sliders for the most used latent dimensions, a canvas to draw or
upload an image and see its reconstruction, denoising, map position and anomaly score, and interpolation
between two images. Nothing is fetched from elsewhere; the page is three static files in ``static/``.

Examples
--------
>>> import aekit
>>> from aekit.serve import make_explorer, build_app
>>> explorer = make_explorer(aekit.pretrained("mnist-vae"), data="mnist-5k")  # doctest: +SKIP
>>> app = build_app(explorer)            # an ASGI app; aekit.serve.serve(...) runs it with uvicorn  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

import torch

from ..errors import AekitError
from ..run import Run
from .app import LOOPBACK, build_app
from .explorer import MAP_MAX, Explorer

__all__ = ["Explorer", "Running", "bind", "build_app", "make_explorer", "serve", "start"]


def make_explorer(
    run: Run, *, data: str | None = None, data_dir: str | None = None, limit: int | None = None
) -> Explorer:
    """An :class:`Explorer` over the test split of the run's data (or of ``data``), first ``limit`` images."""
    from ..evaluation import load_run_splits

    if limit is not None and limit < 1:
        raise AekitError(f"--limit must be >= 1 (got {limit})")
    test = load_run_splits(run, data=data, data_dir=data_dir, progress=False).test
    n = min(len(test), limit or MAP_MAX, MAP_MAX)
    if n < 2:
        raise AekitError(f"the test split of {data or run.config.data.data} holds {n} image; the map needs 2")
    test = test.subset(torch.arange(n))
    return Explorer(run, test, name=run.label, data_name=data or run.config.data.data)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one); AekitError if that is impossible."""
    if not 0 <= port <= 65535:
        raise AekitError(f"--port must be in 0..65535 (got {port})")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError):
        raise AekitError(f"--host {host}: not an address or a known host name") from None
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        why = "the port is in use (pick another --port)" if exc.errno == errno.EADDRINUSE else os.strerror(exc.errno or 0)
        raise AekitError(f"cannot listen on {host}:{port}: {why}") from None


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _server(explorer: Explorer, host: str):
    import uvicorn

    config = uvicorn.Config(build_app(explorer, host=host), log_level="warning", access_log=False)
    return uvicorn.Server(config)


def serve(
    run: Run,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    data: str | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Run the explorer for ``run`` until Ctrl-C.

    Parameters
    ----------
    run : Run
        A loaded run (``aekit.load``) or shipped model (``aekit.pretrained``).
    host, port : str, int
        Where to listen; 127.0.0.1 (this machine only) unless told otherwise.
    data, data_dir, limit
        The test images to map: the run's data unless ``data`` is given, the first ``limit`` (at most 10,000).
    log : callable, optional
        Where the start-up lines go (default: stderr).
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    sock = bind(host, port)  # before the slow part: a busy port fails at once
    try:
        explorer = make_explorer(run, data=data, data_dir=data_dir, limit=limit)
        server = _server(explorer, host)
        log(f"aekit explorer: {explorer.name} on {len(explorer)} test images of {explorer.data_name}")
        log(f"open {url(sock)}  (Ctrl-C stops)" + ("" if host in LOOPBACK
                                                   else f"; listening on {host}, reachable from other machines"))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it stopped on; stopping is the normal way out
            pass
        log("explorer stopped")
    finally:
        sock.close()


class Running:
    """An explorer served from a background thread, from :func:`start`; ``url``, ``stop()``, a context manager."""

    def __init__(self, explorer: Explorer, host: str, port: int, timeout: float) -> None:
        self.explorer = explorer
        self._sock = bind(host, port)
        self.url = url(self._sock)
        self._server = _server(explorer, host)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="aekit-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise AekitError(f"the explorer did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(explorer: Explorer, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Running:
    """Serve ``explorer`` from a background thread (a notebook, a test); port 0 takes a free port.

    >>> with start(make_explorer(aekit.pretrained("mnist-vae"), data="mnist-5k")) as running:  # doctest: +SKIP
    ...     print(running.url)
    """
    return Running(explorer, host, port, timeout)
