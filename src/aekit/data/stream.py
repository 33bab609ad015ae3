"""Image sets larger than memory: read per batch from a ``.npy`` file, or decoded per batch from an image folder.

A streamed set (:class:`StreamedSet`) is an :class:`~aekit.data.imageset.ImageSet` with ``in_memory`` False, whose
``images`` are :class:`StreamedImages`: they have ``len()`` and ``.shape``, and ``images[index]`` or ``images[a:b]``
reads those images into a uint8 ``(B, C, H, W)`` tensor, as indexing the in-memory tensor gives (the contract of
:class:`~aekit.data.imageset.ImageSet`). So the training loop gathers each batch by index (``set.batches``) in the
same way and the same order from either: a seeded run is the same run streamed or not.

:func:`should_stream` decides: when asked (``--stream``), or when the uint8 images would take more than half of the
memory available (``MemAvailable``, shared by the processes torchrun starts on the machine). Peak memory then
depends on the batch size and the number of decoding workers, not on the size of the set.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aekit.data.formats.images import decode_images
from aekit.data.imageset import ImageSet, conform, to_uint8_images
from aekit.data.machine import available_memory, local_processes
from aekit.errors import AekitError

MEMORY_FRACTION = 0.5  # stream when the uint8 images would take more than this share of the available memory
SCAN_BYTES = 32 << 20  # rows per pass of the value-range scan of a non-uint8 array file


def should_stream(nbytes: int, stream: bool | None) -> bool:
    """Whether to stream images that take ``nbytes`` as uint8: ``stream`` if given, else whether they exceed
    half of the available memory divided among this machine's processes (each holds its own copy)."""
    if stream is not None:
        return bool(stream)
    available = available_memory()
    return available is not None and nbytes > MEMORY_FRACTION * available / local_processes()


def default_workers() -> int:
    """Decoding processes per training process for a streamed image folder: the cores shared out, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 1) // local_processes()))


class StreamedImages:
    """uint8 ``(N, C, H, W)`` images read when indexed; :meth:`take` selects some without reading them."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, image_shape: tuple[int, int, int], positions: np.ndarray) -> None:
        self.image_shape = image_shape
        self.positions = positions  # (N,) int64: where each image lies in the file or the list of files

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.positions), *self.image_shape))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        positions = np.atleast_1d(self.positions[key])
        if len(positions) == 0:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8)
        return self.read(positions)

    def take(self, index) -> StreamedImages:
        """The images at ``index`` (an index or boolean mask tensor), still unread."""
        view = copy.copy(self)
        view.positions = self.positions[index.numpy() if isinstance(index, torch.Tensor) else index]
        return view

    def read(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 ``(len(positions), C, H, W)``."""
        raise NotImplementedError


class ArrayImages(StreamedImages):
    """The images of a ``.npy`` file, read by index with positioned reads (``os.preadv``).

    ``np.load(mmap_mode="r")`` opens and checks the file and tells where its rows lie; the rows of a batch
    are then read from there, one read per run of consecutive rows. (Gathering them from the memory map
    instead makes the kernel map whole page-cache folios, up to 2 MiB per row read at random: the process's
    resident memory would grow to the size of the file. Read into a buffer, it stays the batch's size.)

    Any layout and value type :func:`~aekit.data.imageset.to_uint8_images` takes; a non-uint8 file is scanned
    once for its value range, so that every batch is scaled as the whole array would be. ``channels`` and
    ``image_size`` convert each batch as :func:`~aekit.data.imageset.conform` converts a whole set.
    """

    def __init__(self, path: Path, *, channels: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        self.path, self.channels, self.image_size = Path(path), channels, image_size
        self.source = str(self.path)
        try:
            header = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise AekitError(f"{self.path}: cannot stream it ({exc}); save a plain numeric array") from None
        except Exception as exc:  # noqa: BLE001 - numpy raises many kinds on damaged files
            raise AekitError(f"{self.path}: cannot read NumPy file ({type(exc).__name__}: {exc})") from None
        self.file_shape, self.dtype_on_disk, self.offset = header.shape, header.dtype, header.offset
        shape = self.file_shape
        if header.dtype.kind not in "biuf":
            raise AekitError(f"{self.source}: cannot use an array of dtype {header.dtype} as images (need numbers)")
        if header.ndim > 1 and not header.flags.c_contiguous:
            raise AekitError(f"{self.source}: the array is stored in Fortran order; save "
                             "numpy.ascontiguousarray(images) to stream it")
        del header  # the mapping itself is not used
        one = to_uint8_images(np.zeros((1, *shape[1:]), np.uint8), source=self.source) if len(shape) > 1 else None
        if one is None or shape[0] == 0:
            raise AekitError(f"{self.source}: cannot use an array of shape {shape} as images; expected "
                             "(N, H, W), (N, H, W, C) or (N, C, H, W) with N > 0")
        self.row_bytes = int(np.prod(shape[1:])) * self.dtype_on_disk.itemsize
        self.value_range: tuple[float, float] | None = None  # scanned at the first read of a non-uint8 file
        self.scaled = self.dtype_on_disk not in (np.uint8, np.bool_)
        self.file = None
        one = conform(one, channels=channels, image_size=image_size)
        super().__init__(tuple(one.shape[1:]), np.arange(shape[0]))

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The file's rows at ``positions``, as stored: ``(len(positions), *row shape)``."""
        if self.file is None:
            self.file = open(self.path, "rb")  # noqa: SIM115 - shared by the views (take) of this set; closed with them
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        out = np.empty((len(positions), self.row_bytes), dtype=np.uint8)
        runs = np.flatnonzero(np.diff(ordered) != 1) + 1  # where a run of consecutive rows ends
        for start, stop in zip(np.concatenate([[0], runs]), np.concatenate([runs, [len(ordered)]]), strict=True):
            self._read_at(out[start:stop], self.offset + int(ordered[start]) * self.row_bytes)
        rows = np.empty_like(out)
        rows[order] = out
        return rows.view(self.dtype_on_disk).reshape(len(positions), *self.file_shape[1:])

    def _read_at(self, buffer: np.ndarray, offset: int) -> None:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view):
            try:
                if hasattr(os, "preadv"):
                    got = os.preadv(self.file.fileno(), [view[done:]], offset + done)
                else:  # no positioned reads here (Windows): seek, then read
                    self.file.seek(offset + done)
                    got = self.file.readinto(view[done:])
            except OSError as exc:
                raise AekitError(f"cannot read {self.path}: {exc.strerror or exc}") from None
            if not got:
                raise AekitError(f"{self.path} is truncated: its header announces {self.file_shape[0]} images")
            done += got

    def _scan(self) -> tuple[float, float]:
        """Minimum and maximum over the whole file, a few MB at a time."""
        low, high = np.inf, -np.inf
        step = max(1, SCAN_BYTES // self.row_bytes)
        for start in range(0, self.file_shape[0], step):
            chunk = self.rows(np.arange(start, min(start + step, self.file_shape[0])))
            if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
                raise AekitError(f"{self.source}: the images contain NaN or infinite values")
            low, high = min(low, chunk.min()), max(high, chunk.max())
        return float(low), float(high)

    def read(self, positions: np.ndarray) -> torch.Tensor:
        if self.scaled and self.value_range is None:
            self.value_range = self._scan()
        images = to_uint8_images(self.rows(positions), source=self.source, value_range=self.value_range)
        return conform(images, channels=self.channels, image_size=self.image_size)

    def __getstate__(self) -> dict:  # for DataLoader workers: each opens the file itself
        return {**self.__dict__, "file": None}


class FolderImages(StreamedImages):
    """Image files decoded when read, to ``channels`` channels of ``image_size``."""

    def __init__(self, paths: Sequence[Path], channels: int, image_size: tuple[int, int]) -> None:
        self.paths, self.channels, self.image_size = list(paths), channels, image_size
        super().__init__((channels, *image_size), np.arange(len(self.paths)))

    def read(self, positions: np.ndarray) -> torch.Tensor:
        return decode_images([self.paths[i] for i in positions], self.channels, self.image_size)


@dataclass(repr=False)
class StreamedSet(ImageSet):
    """An :class:`~aekit.data.imageset.ImageSet` whose images stay on disk until a batch is read.

    ``images`` are :class:`StreamedImages` (``in_memory`` is False); :meth:`subset` selects images
    without reading them and :meth:`batches` reads them, an image folder decoded ahead by ``workers``.
    """

    images: StreamedImages
    in_memory = False

    def __post_init__(self) -> None:
        if not isinstance(self.images, StreamedImages):
            raise AekitError(f"{self.name}: a streamed set holds StreamedImages, not {type(self.images).__name__}")
        self._check_labels(len(self.images))

    def subset(self, index: torch.Tensor) -> StreamedSet:
        labels = None if self.labels is None else self.labels[index]
        return StreamedSet(self.images.take(index), labels, self.name, self.classes)

    def batches(self, index_batches: Sequence, workers: int = 0) -> Iterator[torch.Tensor]:
        return iter_batches(self.images, index_batches, workers)


def iter_batches(images: StreamedImages, batches: Sequence, workers: int = 0) -> Iterator[torch.Tensor]:
    """``images[b]`` for each ``b`` of ``batches`` (index tensors or slices), in order.

    A streamed image folder is decoded ahead by ``workers`` DataLoader processes (at most two batches each in
    flight); an array file is read here, as it is asked for.
    """
    if workers > 0 and isinstance(images, FolderImages) and len(batches) > 0:
        return _decoded(images, batches, workers)
    return (images[b] for b in batches)


def chunks(n: int, size: int) -> list[slice]:
    """``[0, n)`` in slices of ``size``."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


class _Decoder(torch.utils.data.Dataset):
    """A worker's view of the images: a batch, or the message of the error reading it (re-raised by the
    trainer as an AekitError; the DataLoader would wrap it in a traceback)."""

    def __init__(self, images: StreamedImages) -> None:
        self.images = images

    def __getitem__(self, batch) -> torch.Tensor | str:
        try:
            return self.images[batch]
        except AekitError as err:
            return str(err)

    def __len__(self) -> int:
        return len(self.images)


def _decoded(images: StreamedImages, batches: Sequence, workers: int) -> Iterator[torch.Tensor]:
    loader = torch.utils.data.DataLoader(
        _Decoder(images), batch_size=None, sampler=batches, num_workers=workers, prefetch_factor=2,
        worker_init_fn=_worker_init,
    )
    for batch in loader:
        if isinstance(batch, str):
            raise AekitError(batch)
        yield batch


def _worker_init(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the trainer decides when to stop and then ends its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
