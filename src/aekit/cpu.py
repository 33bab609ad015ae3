"""CPU settings that make training and evaluation fast.

:func:`tune_cpu` changes the whole process (flush-to-zero in every thread, the allocator's thresholds): the
``aekit`` command and :func:`aekit.train` call it, and no other library function does; a script that
evaluates or samples at the command's speed calls it once itself. :func:`single_threaded` is scoped to a block.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Tensors of a few MB (a batch of decoded images, an IW chunk) are allocated and freed at every
# step. By default glibc hands such blocks back to the kernel with munmap or a heap trim, and the
# next step pays a page fault per 4 KiB to get them again: a large share of the IW-NLL evaluation's
# time (docs/performance.md). Serving blocks below 32 MiB from the heap, and keeping up to 256 MiB of it, stops that.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20

_done = False


def flush_denormals_in_worker_threads() -> bool:
    """Set flush-to-zero in each of the OpenMP pool's threads, not only in this one.

    ``torch.set_flush_denormal`` sets the calling thread's FPU mode. Threads created later inherit it,
    but the OpenMP pool exists as soon as any parallel operation has run (loading the data does), and its
    workers then keep computing on denormals. With Adam that happens within two epochs on MNIST: a weight
    of an always-black border pixel has a zero gradient, so its first moment decays by 0.9 a step into the
    denormal range, and the half of every fused Adam pass that a worker thread computes slows down (the
    reference VAE's epochs grew slower from one to the next: docs/performance.md). This runs one parallel region of
    the pool that torch uses, in which every thread sets its own mode. Returns whether it could.
    """
    gomp = _libgomp()
    if gomp is None:
        return False
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: torch.set_flush_denormal(True))
    gomp.GOMP_parallel(callback, None, ctypes.c_uint(torch.get_num_threads()), ctypes.c_uint(0))
    return True


def _libgomp():
    """The GNU OpenMP runtime that torch's parallel operations run on (already loaded), or None."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    maps = "/proc/self/maps"
    try:
        with open(maps, encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)  # the loaded library itself: dlopen of a loaded path returns its handle
            lib.GOMP_parallel.restype = None
            return lib
        except (OSError, AttributeError):
            continue
    return None


def tune_cpu() -> None:
    """Flush denormals in every thread (they can slow CPU training 10x) and keep freed memory for reuse (glibc)."""
    global _done
    torch.set_flush_denormal(True)
    flush_denormals_in_worker_threads()
    if _done:
        return
    _done = True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    except (OSError, AttributeError):  # an unusual libc: run with its defaults
        pass


@contextlib.contextmanager
def single_threaded(blas_only: bool = False) -> Iterator[None]:
    """One BLAS/OpenMP thread for scikit-learn inside the block (restored after it): numpy's and scipy's
    OpenBLAS pools beside torch's spin-wait against each other, which made a logistic regression many times
    slower on two busy cores (docs/performance.md). ``blas_only``: one BLAS thread, OpenMP's as they are (scikit-learn's own parallel loops,
    e.g. k-NN's, which gain from them; see docs/performance.md)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas" if blas_only else None):
        yield
