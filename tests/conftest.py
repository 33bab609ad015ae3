"""Shared fixtures for the data tests (self-contained: other fixtures may be added below)."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets folder (``shared/data`` beside the repo).

    Override with ``$AEKIT_TEST_SHARED_DATA``; tests using it are skipped when absent.
    """
    env = os.environ.get("AEKIT_TEST_SHARED_DATA")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (folder / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not found in {folder} (set AEKIT_TEST_SHARED_DATA)")
    return folder


def _write_idx(path: Path, array: np.ndarray, *, gz: bool | None = None) -> Path:
    """Write a uint8 array as a valid IDX file (gzip'd when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    data += struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if path.suffix == ".gz" if gz is None else gz:
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """``write_idx(path, uint8_array)`` writes a valid IDX file (gzip'd for ``.gz`` names)."""
    return _write_idx


def pytest_configure(config: pytest.Config) -> None:
    # One torch thread for the whole suite: its models are tiny, and on a two-core machine shared
    # with anything else (an xdist worker, a subprocess under test) OpenMP's spin-waiting threads
    # make small operations 5-20x slower.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory):
    """Keep every test off the user's cache and off the internet.

    Named datasets are cached in a per-session folder, and the default download mirrors
    point at a closed port on 127.0.0.1 (tests that download pass their own local server).
    """
    saved = {k: os.environ.get(k) for k in ("AEKIT_DATA", "AEKIT_MIRRORS")}
    os.environ["AEKIT_DATA"] = str(tmp_path_factory.mktemp("aekit-data"))
    os.environ["AEKIT_MIRRORS"] = "http://127.0.0.1:9/"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
