"""Tests of aekit.data.download against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from aekit.data import download, load_dataset, load_images
from aekit.data.download import FILES, MD5S, MIRRORS, download_file, fetch, mirror_urls
from aekit.errors import AekitError

NAMES = list(FILES["mnist"])


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; counts requests; ``/slow/...`` stalls, ``/short/...`` breaks off."""

    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/slow/"):  # the client has given up by then
            time.sleep(1.0)
            self.close_connection = True
            return
        if self.path.startswith("/short/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only a few bytes")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:  # clients that hang up
        pass


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        handler = type("Handler", (_Handler,), {"requests": self.requests})
        self.httpd = _QuietServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def mirror(self, name: str) -> str:
        return f"{self.url}/{name}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    srv = Server(root)
    yield srv
    srv.close()


@pytest.fixture
def tiny_mnist(tmp_path: Path, write_idx, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Four tiny valid IDX .gz files under the MNIST names; FILES["mnist"] patched to their sha256."""
    r = np.random.default_rng(0)
    folder = tmp_path / "tiny"
    write_idx(folder / "train-images-idx3-ubyte.gz", r.integers(0, 256, (6, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(6))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", r.integers(0, 256, (4, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([9, 8, 7, 6]))
    contents = {name: (folder / name).read_bytes() for name in NAMES}
    monkeypatch.setitem(FILES, "mnist", {n: hashlib.sha256(c).hexdigest() for n, c in contents.items()})
    monkeypatch.delenv("AEKIT_MIRRORS", raising=False)
    return contents


def _serve(server: Server, mirror: str, contents: dict[str, bytes]) -> str:
    (server.root / mirror).mkdir(exist_ok=True)
    for name, data in contents.items():
        (server.root / mirror / name).write_bytes(data)
    return server.mirror(mirror)


def _leftovers(folder: Path) -> list[Path]:
    return list(folder.glob(".*.part"))


def test_official_mirrors_and_checksums() -> None:
    assert MIRRORS["mnist"] == ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
    assert MIRRORS["fashion-mnist"] == ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
    assert MIRRORS["cifar10"] == ["https://www.cs.toronto.edu/~kriz/"]
    for name in ("mnist", "fashion-mnist"):
        assert set(FILES[name]) == set(MD5S[name]) == set(NAMES)
    # the binary version's MD5 as https://www.cs.toronto.edu/~kriz/cifar.html publishes it
    assert FILES["cifar10"] == {"cifar-10-binary.tar.gz": "md5:c32a1d4ab5d03f1284b67883e8d87530"}


def test_checksum_tables_match_the_real_files(shared_data: Path) -> None:
    for name in ("mnist", "fashion-mnist"):  # ../shared/data holds CIFAR-10's first records, not its tarball
        files = FILES[name]
        for filename, sha256 in files.items():
            data = (shared_data / name / filename).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha256, filename
            assert hashlib.md5(data).hexdigest() == MD5S[name][filename], filename


def test_fetch_downloads_and_verifies(server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path, capsys) -> None:
    mirror = _serve(server, "m1", tiny_mnist)
    dest = tmp_path / "data" / "mnist"  # created
    fetch("mnist", dest, mirrors=[mirror], progress=False)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == tiny_mnist
    assert len(server.requests) == 4 and not _leftovers(dest)
    assert capsys.readouterr().err == ""
    fetch("mnist", dest, mirrors=[mirror], progress=False)  # all there: nothing fetched
    assert len(server.requests) == 4


def test_progress_bar_goes_to_stderr(server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path, capsys) -> None:
    mirror = _serve(server, "m1", tiny_mnist)
    fetch("mnist", tmp_path / "d", mirrors=[mirror], progress=True, files=["t10k-labels-idx1-ubyte.gz"])
    captured = capsys.readouterr()
    assert "t10k-labels-idx1-ubyte.gz" in captured.err and captured.out == ""
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["t10k-labels-idx1-ubyte.gz"]


def test_second_mirror_after_404_and_refused_connection(
    server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    good = _serve(server, "good", tiny_mnist)
    fetch("mnist", tmp_path / "d", mirrors=[closed, server.mirror("empty"), good], progress=False)
    assert {p.name for p in (tmp_path / "d").iterdir()} == set(NAMES)
    assert sorted(server.requests) == sorted([f"/empty/{n}" for n in NAMES] + [f"/good/{n}" for n in NAMES])


def test_all_mirrors_fail(server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path) -> None:
    wrong = {name: data + b"tampered" for name, data in tiny_mnist.items()}
    bad1, bad2 = _serve(server, "bad1", wrong), _serve(server, "bad2", wrong)
    dest = tmp_path / "d"
    with pytest.raises(AekitError) as info:
        fetch("mnist", dest, mirrors=[bad1, bad2, server.mirror("none"), server.url + "/short/", "nota://url/"],
              progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("could not download train-images-idx3-ubyte.gz: ")
    assert f"{bad1}train-images-idx3-ubyte.gz: checksum mismatch" in message
    assert f"{bad2}train-images-idx3-ubyte.gz: checksum mismatch" in message
    assert "none/train-images-idx3-ubyte.gz: HTTP 404" in message
    assert "short/train-images-idx3-ubyte.gz: connection closed after 16 of 1000 bytes" in message
    assert "nota://url/train-images-idx3-ubyte.gz: " in message and "AEKIT_MIRRORS" in message
    assert not dest.exists() or (not list(dest.iterdir()))  # nothing under a final name, no .part files


def test_a_failed_download_removes_the_folders_it_created(
    server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path
) -> None:
    with pytest.raises(AekitError, match="could not download"):
        fetch("mnist", tmp_path / "new" / "mnist", mirrors=[server.mirror("none")], progress=False)
    assert not (tmp_path / "new").exists()  # new/mnist/ and new/ are gone
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(AekitError, match="could not download"):
        fetch("mnist", kept, mirrors=[server.mirror("none")], progress=False)
    assert kept.is_dir()  # there before: left as it was
    mirror = _serve(server, "partial", {NAMES[0]: tiny_mnist[NAMES[0]]})
    with pytest.raises(AekitError, match=f"could not download {NAMES[1]}"):
        fetch("mnist", tmp_path / "p", mirrors=[mirror], progress=False)
    assert [p.name for p in (tmp_path / "p").iterdir()] == [NAMES[0]]  # not empty: kept with the good file


def test_timeout_is_reported(server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path) -> None:
    with pytest.raises(AekitError, match="slow/t10k-labels-idx1-ubyte.gz: .*timed out"):
        download_file([server.url + "/slow/t10k-labels-idx1-ubyte.gz"], tmp_path / "x", "0" * 64,
                      progress=False, timeout=0.3)
    assert not (tmp_path / "x").exists() and not _leftovers(tmp_path)


def test_existing_files_are_kept(server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path) -> None:
    mirror = _serve(server, "m1", tiny_mnist)
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / NAMES[0]).write_bytes(tiny_mnist[NAMES[0]])
    fetch("mnist", dest, mirrors=[mirror], progress=False)
    assert len(server.requests) == 3 and f"/m1/{NAMES[0]}" not in server.requests
    (dest / NAMES[1]).write_bytes(b"my own file")
    with pytest.raises(AekitError, match=f"{NAMES[1]} is not the expected file"):
        fetch("mnist", dest, mirrors=[mirror], progress=False)
    assert (dest / NAMES[1]).read_bytes() == b"my own file" and len(server.requests) == 3


def test_mirrors_env_override(
    server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(server, "mnist", tiny_mnist)
    monkeypatch.setenv("AEKIT_MIRRORS", f" {server.mirror('missing')} , {server.url}/{{name}}")
    assert mirror_urls("mnist") == [server.mirror("missing"), f"{server.url}/mnist"]
    assert mirror_urls("mnist", ["http://x/"]) == ["http://x/"]
    fetch("mnist", tmp_path / "d", progress=False)
    assert len(list((tmp_path / "d").iterdir())) == 4
    assert [p for p in server.requests if p.startswith("/mnist/")] == [f"/mnist/{n}" for n in NAMES]
    monkeypatch.setenv("AEKIT_MIRRORS", "")
    assert mirror_urls("fashion-mnist") == MIRRORS["fashion-mnist"]


def test_load_dataset_downloads_then_loads(
    server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path
) -> None:
    mirror = _serve(server, "m1", tiny_mnist)
    splits = load_dataset("mnist", data_dir=tmp_path / "cache", mirrors=[mirror], progress=False)
    assert splits.train.images.shape == (6, 1, 28, 28) and splits.test.labels.tolist() == [9, 8, 7, 6]
    assert len(server.requests) == 4
    again = load_images("mnist", data_dir=tmp_path / "cache", mirrors=[mirror], progress=False)
    assert len(server.requests) == 4 and again.labels.tolist() == [9, 8, 7, 6]


def test_only_missing_files_are_downloaded(
    server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path, write_idx
) -> None:
    mirror = _serve(server, "m1", tiny_mnist)
    folder = tmp_path / "mnist"
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((6, 28, 28)))  # uncompressed: used as is
    splits = load_dataset("mnist", data_dir=tmp_path, mirrors=[mirror], progress=False)
    assert sorted(server.requests) == sorted(f"/m1/{n}" for n in NAMES[1:])
    assert int(splits.train.images.max()) == 0


def test_download_refusals(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AekitError, match="cannot create folder .*file"):
        download_file(["http://127.0.0.1:9/x"], blocker / "sub" / "x.gz", "0" * 64, progress=False)
    with pytest.raises(AekitError, match="no downloadable dataset 'mnist-5k'"):
        fetch("mnist-5k", tmp_path)
    with pytest.raises(AekitError, match="no mirror URLs given"):
        download_file([], tmp_path / "x.gz", "0" * 64, progress=False)


def test_real_mnist_end_to_end(
    server: Server, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(shared_data / "mnist", server.root / "mirror")
    monkeypatch.setenv("AEKIT_MIRRORS", server.mirror("mirror"))
    splits = load_dataset("mnist", data_dir=tmp_path / "data", progress=False)
    assert len(splits.train) == 60000 and len(splits.test) == 10000 and int(splits.train.labels[0]) == 5
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(NAMES)
    assert len(server.requests) == 4


def test_no_leftovers_when_interrupted(
    server: Server, tiny_mnist: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = _serve(server, "m1", tiny_mnist)

    def interrupted(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_stream", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch("mnist", tmp_path / "d", mirrors=[mirror], progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def _cifar_tarball(sample: Path) -> bytes:
    """A tarball in the official layout, its batches cut from the 4,000 real records of the shared sample."""
    import io
    import tarfile

    data = sample.read_bytes()
    record = 3073
    parts = {f"data_batch_{i}.bin": data[(i - 1) * 600 * record : i * 600 * record] for i in range(1, 6)}
    parts["test_batch.bin"] = data[3000 * record : 3400 * record]
    parts["batches.meta.txt"] = b"airplane\nautomobile\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in parts.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_cifar10_downloads_verifies_and_reads_the_official_binary_batches(server, tmp_path, shared_data, monkeypatch):
    from aekit.data import load_dataset

    sample = shared_data / "cifar10-sample" / "data_batch_1.first4000.bin"
    tarball = _cifar_tarball(sample)
    monkeypatch.setitem(FILES, "cifar10", {"cifar-10-binary.tar.gz": "md5:" + hashlib.md5(tarball).hexdigest()})
    monkeypatch.delenv("AEKIT_MIRRORS", raising=False)
    mirror = _serve(server, "cifar", {"cifar-10-binary.tar.gz": tarball})
    splits = load_dataset("cifar10", data_dir=tmp_path / "data", mirrors=[mirror], progress=False)
    assert splits.train.images.shape == (3000, 3, 32, 32) and splits.test.images.shape == (400, 3, 32, 32)
    assert splits.train.classes[0] == "airplane" and splits.train.labels.max() <= 9
    raw = np.frombuffer(sample.read_bytes(), np.uint8).reshape(-1, 3073)
    assert splits.train.labels[:50].tolist() == raw[:50, 0].tolist()
    np.testing.assert_array_equal(splits.train.images[7].numpy(), raw[7, 1:].reshape(3, 32, 32))
    again = load_dataset("cifar10", data_dir=tmp_path / "data", mirrors=["http://127.0.0.1:9/"], progress=False)
    assert torch.equal(again.test.images, splits.test.images)  # unpacked once: read without the network


def test_a_damaged_cifar10_tarball_is_refused_and_leaves_nothing(server, tmp_path, shared_data, monkeypatch):
    from aekit.data import load_dataset

    tarball = _cifar_tarball(shared_data / "cifar10-sample" / "data_batch_1.first4000.bin")
    monkeypatch.setitem(FILES, "cifar10", {"cifar-10-binary.tar.gz": "md5:" + hashlib.md5(tarball).hexdigest()})
    mirror = _serve(server, "bad", {"cifar-10-binary.tar.gz": tarball[:-100] + b"x" * 100})
    with pytest.raises(AekitError, match="checksum mismatch .md5"):
        load_dataset("cifar10", data_dir=tmp_path / "data", mirrors=[mirror], progress=False)
    assert not (tmp_path / "data" / "cifar10").exists()
