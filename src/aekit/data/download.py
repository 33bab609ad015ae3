"""Downloading the named datasets' files (MNIST's and Fashion-MNIST's IDX files, CIFAR-10's binary tarball),
verified by the checksum their maintainers publish (sha256, or ``md5:`` where only an MD5 is published).

Files are streamed through :func:`aekit.files.atomic_write` (a temporary
``.<name>.<random>.part`` file beside the destination), hashed while streaming,
and moved into place only when the checksum matches, so a partial or wrong file
never appears under the final name. A download that fails removes the folders
it created for the file, when they are still empty.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from aekit.errors import AekitError
from aekit.files import atomic_write

#: Base URLs tried in order; a file's URL is the base followed by its name.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    "cifar10": [
        "https://www.cs.toronto.edu/~kriz/",
    ],
}

#: The checksum of every official file: a sha256 (from the dataset maintainers' published files), or
#: ``md5:<hex>`` where the maintainers publish only an MD5 (CIFAR-10's page does).
FILES: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "cifar10": {
        "cifar-10-binary.tar.gz": "md5:c32a1d4ab5d03f1284b67883e8d87530",
    },
}

#: The md5s the datasets publish (and torchvision checks), for cross-reference;
#: aekit verifies the sha256s in :data:`FILES`.
MD5S: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: Environment variable with comma-separated mirror base URLs overriding :data:`MIRRORS`.
MIRRORS_ENV = "AEKIT_MIRRORS"

_CHUNK = 1 << 20
_MAX_BYTES = 256 << 20  # no file we fetch is near this; guards against endless responses


class _Rejected(Exception):
    """A mirror's response was unusable (the reason is the message)."""


def _algorithm(checksum: str) -> tuple[str, str]:
    """``"md5:<hex>"`` -> ``("md5", hex)``; a bare hex digest is a sha256."""
    name, sep, digest = checksum.partition(":")
    return (name, digest) if sep else ("sha256", checksum)


def sha256_file(path: Path, algorithm: str = "sha256") -> str:
    """Return the hex digest (sha256 unless ``algorithm`` says otherwise) of a file.

    Raises
    ------
    AekitError
        If the file cannot be read.
    """
    digest = hashlib.new(algorithm)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise AekitError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def verify_file(path: Path, sha256: str) -> None:
    """Raise :class:`AekitError` unless the file at ``path`` has the given checksum (see :data:`FILES`)."""
    algorithm, expected = _algorithm(sha256)
    actual = sha256_file(path, algorithm)
    if actual != expected:
        raise AekitError(
            f"{path} is not the expected file ({algorithm} {actual}, expected {expected}); it may be "
            f"corrupt or incomplete: delete it to have it downloaded again"
        )


def mirror_urls(name: str, mirrors: list[str] | None = None) -> list[str]:
    """Return the mirror base URLs for dataset ``name``.

    ``mirrors`` wins, then the comma-separated ``$AEKIT_MIRRORS``, then
    :data:`MIRRORS`. A ``{name}`` in a base URL is replaced by the dataset name.
    """
    if mirrors is None:
        env = [m.strip() for m in os.environ.get(MIRRORS_ENV, "").split(",") if m.strip()]
        mirrors = env or MIRRORS.get(name, [])
    return [m.replace("{name}", name) for m in mirrors]


def _stream(url: str, out: BinaryIO, dest: Path, *, progress: bool, timeout: float, algorithm: str = "sha256") -> str:
    """Stream ``url`` into ``out`` (the file that becomes ``dest``); return its digest. Raise _Rejected with a reason."""
    digest = hashlib.new(algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": "aekit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total, desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=not progress, leave=False,
            ) as bar:
                size = 0
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > _MAX_BYTES:
                        raise _Rejected(f"response larger than {_MAX_BYTES >> 20} MiB")
                    digest.update(chunk)
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise AekitError(f"cannot write {dest}: {exc.strerror or exc}") from None
                    bar.update(len(chunk))
            if total is not None and size != total:
                raise _Rejected(f"connection closed after {size} of {total} bytes")
    except urllib.error.HTTPError as exc:
        raise _Rejected(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _Rejected(str(exc.reason)) from None
    except TimeoutError:
        raise _Rejected(f"timed out after {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Rejected(f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # malformed URL
        raise _Rejected(f"invalid URL ({exc})") from None
    return digest.hexdigest()


def download_file(
    urls: list[str], dest: Path, sha256: str, *, progress: bool = True, timeout: float = 30
) -> None:
    """Download ``dest`` from the first of ``urls`` that serves the right file.

    Parameters
    ----------
    urls : list of str
        Full URLs of the same file, tried in order.
    dest : pathlib.Path
        Final path; its folder is created if missing (and removed again, with any
        parents created for it, if the download fails and leaves it empty). A good
        existing file is kept (nothing is downloaded); a different existing file is
        an error.
    sha256 : str
        Expected checksum of the file: a hex sha256, or ``md5:<hex>``.
    progress : bool
        Show a tqdm progress bar on stderr.
    timeout : float
        Socket timeout in seconds for each mirror.

    Raises
    ------
    AekitError
        If the folder cannot be created or written, if an existing file does
        not match, or if every URL fails; the message lists each URL's reason.
    """
    dest = Path(dest)
    if dest.exists():
        verify_file(dest, sha256)
        return
    try:
        created = _missing_folders(dest.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AekitError(
            f"cannot create folder {dest.parent}: {exc.strerror or exc}; set AEKIT_DATA or pass "
            f"another data folder"
        ) from None
    try:
        _try_urls(urls, dest, sha256, progress=progress, timeout=timeout)
    except AekitError:
        _remove_empty(created)
        raise


def _try_urls(urls: list[str], dest: Path, sha256: str, *, progress: bool, timeout: float) -> None:
    algorithm, expected = _algorithm(sha256)
    failures: list[str] = []
    for url in urls:
        try:
            with atomic_write(dest) as out:
                actual = _stream(url, out, dest, progress=progress, timeout=timeout, algorithm=algorithm)
                if actual != expected:
                    raise _Rejected(f"checksum mismatch ({algorithm} {actual})")
            return
        except _Rejected as exc:
            failures.append(f"{url}: {exc}")
        except OSError as exc:  # creating, syncing or renaming the local file
            raise AekitError(f"cannot write {dest}: {exc.strerror or exc}") from None
    reasons = "; ".join(failures) if failures else "no mirror URLs given"
    raise AekitError(
        f"could not download {dest.name}: {reasons} (set {MIRRORS_ENV} to other mirrors, or "
        f"put the file in {dest.parent} yourself)"
    )


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, up to the first that is not empty (or cannot be removed)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def fetch(
    name: str,
    dest_dir: Path,
    *,
    mirrors: list[str] | None = None,
    progress: bool = True,
    timeout: float = 30,
    files: Iterable[str] | None = None,
) -> None:
    """Ensure the four IDX files of dataset ``name`` exist in ``dest_dir``.

    Existing files are verified, missing ones downloaded and verified.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"``.
    dest_dir : pathlib.Path
        Folder for the files (created if missing; removed again if still empty when a download fails).
    mirrors : list of str, optional
        Base URLs to try in order (see :func:`mirror_urls`).
    progress : bool
        Show progress bars on stderr.
    timeout : float
        Socket timeout in seconds.
    files : iterable of str, optional
        Only these file names (default: all four).

    Raises
    ------
    AekitError
        For an unknown dataset, a mismatching existing file, or a failed download.
    """
    if name not in FILES:
        raise AekitError(f"no downloadable dataset {name!r}; choose one of {', '.join(FILES)}")
    bases = mirror_urls(name, mirrors)
    wanted = list(FILES[name] if files is None else files)
    for filename in wanted:
        sha256 = FILES[name][filename]
        urls = [base.rstrip("/") + "/" + filename for base in bases]
        download_file(urls, Path(dest_dir) / filename, sha256, progress=progress, timeout=timeout)
