"""Fuzz the loaders a stranger's file reaches: IDX parser, image folder, array file, checkpoint, run config,
``.npy`` headers, text files given binary names, and ``.aek`` compressed images.

    python bench/fuzz.py                 # 2,000 mutated inputs per target (20,000 in all)
    python bench/fuzz.py --per-target 500

Each input is a valid seed file with random mutations (bit flips, overwritten bytes, truncation, inserted
garbage, header fields set to extreme values); three targets mutate by structure instead: a run's
``config.json`` gets JSON of any nesting and size in place of any value, a ``.npy`` file gets headers that lie
about the shape and type of the data that follows, and text (CSV, JSON, prose) is saved under every binary
name aekit reads (``.npy``, ``.npz``, ``.png``, ``model.safetensors``). Every input must either load or raise
``AekitError`` with a one-line message; anything else is a bug and is printed with the seed that reproduces it.
Writes ``bench/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random mutations of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and out:  # flip a bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # overwrite a run of bytes
            i = rng.randrange(len(out))
            for j in range(i, min(len(out), i + rng.randint(1, 16))):
                out[j] = rng.randrange(256)
        elif op == 2:  # truncate
            out = out[: rng.randrange(len(out) + 1)]
        elif op == 3:  # insert garbage
            i = rng.randrange(len(out) + 1)
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 4 and len(out) >= 8:  # an extreme 4- or 8-byte integer somewhere in the first 64 bytes
            i = rng.randrange(min(len(out) - 4, 64))
            value = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 2**31 - 1])
            out[i : i + 4] = value.to_bytes(4, rng.choice(["big", "little"]))
        elif op == 5 and out:  # duplicate a slice
            i = rng.randrange(len(out))
            out[i:i] = out[i : i + rng.randint(1, 64)]
    return bytes(out)


# ----- seeds and targets: each target writes the mutated bytes where its loader reads them -----


def _idx_seed() -> bytes:
    images = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    raw = struct.pack(">BBBB3I", 0, 0, 8, 3, 6, 5, 4) + images.tobytes()
    return raw


def target_idx(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    from aekit.data.formats.idx import read_idx

    def run(data: bytes) -> None:
        gz = data[:2] == b"\x1f\x8b"
        path = work / ("f.idx.gz" if gz else "f.idx")
        path.write_bytes(data)
        read_idx(path, 3)

    return _idx_seed(), run


def target_idx_gz(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    seed, run = target_idx(work)
    return gzip.compress(seed, mtime=0), run


def target_image_folder(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    from PIL import Image

    from aekit.data import load_images

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buffer, "PNG")
    folder = work / "images"
    folder.mkdir(exist_ok=True)

    def run(data: bytes) -> None:
        (folder / "a.png").write_bytes(data)
        load_images(str(folder), image_size=(8, 8))

    return buffer.getvalue(), run


def target_array(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    from aekit.data import load_dataset

    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((4, 6, 6), np.uint8), x_test=np.ones((2, 6, 6), np.uint8))

    def run(data: bytes) -> None:
        suffix = ".npy" if data[:6] == b"\x93NUMPY" else ".npz"
        path = work / f"arr{suffix}"
        path.write_bytes(data)
        load_dataset(str(path))

    return buffer.getvalue(), run


def target_checkpoint(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    import shutil

    import aekit

    seed_run = _seed_run(work)
    run_dir = work / "run"
    shutil.copytree(seed_run, run_dir, dirs_exist_ok=True)
    model_bytes = (seed_run / "model.safetensors").read_bytes()
    config_bytes = (seed_run / "config.json").read_bytes()
    # the seed is both files, separated so one mutation stream covers either
    marker = b"\n--aekit-fuzz--\n"

    def run(data: bytes) -> None:
        model, _, config = data.partition(marker)
        (run_dir / "model.safetensors").write_bytes(model)
        (run_dir / "config.json").write_bytes(config or config_bytes)
        aekit.load(run_dir)

    return model_bytes + marker + config_bytes, run


def _seed_run(work: Path) -> Path:
    import torch

    import aekit

    seed_run = work / "seed-run"
    if not seed_run.exists():
        images = torch.randint(0, 256, (40, 1, 6, 6), dtype=torch.uint8)
        splits = aekit.Splits(aekit.ImageSet(images[:30], None, "t"), aekit.ImageSet(images[30:], None, "v"))
        aekit.train("vae", out=seed_run, epochs=1, hidden=(8,), latent_dim=2, splits=splits, progress=False, log=None)
    return seed_run


def nested_json(rng: random.Random) -> str:
    """A JSON value of any nesting and size, written out by hand (``json.dumps`` itself stops at deep nesting)."""
    kind = rng.randrange(9)
    depth = rng.choice([1, 2, 50, 1000, 100_000])
    if kind == 0:
        return "[" * depth + "]" * depth
    if kind == 1:
        return '{"a":' * depth + "0" + "}" * depth
    if kind == 2:
        return str(rng.choice([10**400, -(10**400), 2**63, -1, 0]))
    if kind == 3:
        return rng.choice(["1e999", "-1e999", "NaN", "Infinity", "-0.0", "1.5"])
    if kind == 4:
        return json.dumps("x" * rng.choice([0, 1, 10**6]))
    if kind == 5:
        return rng.choice(["null", "true", "false", "[]", "{}", '[1, "2", null]'])
    if kind == 6:
        return "[" + ",".join(str(rng.randint(-3, 70000)) for _ in range(rng.choice([1, 2, 3, 10**5]))) + "]"
    if kind == 7:
        return '{"' + "k" * 1000 + '": 1}'
    return json.dumps({"model": {"hidden": [8]}, "extra": [[{}]]})


def mutate_config(data: bytes, rng: random.Random) -> bytes:
    """Replace one to three values of a JSON config (at any depth) with :func:`nested_json` values."""
    config = json.loads(data)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))

    walk(config, ())
    marker = "\u0000fuzz{}\u0000"
    replaced = []
    for i in range(rng.randint(1, 3)):
        path = rng.choice(paths[1:])
        node = config
        for key in path[:-1]:
            node = node[key] if isinstance(node, dict) and key in node else None
            if node is None:
                break
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = marker.format(i)
            replaced.append(nested_json(rng))
    text = json.dumps(config)
    for i, value in enumerate(replaced):
        text = text.replace(json.dumps(marker.format(i)), value)
    return text.encode()


def target_config(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    import shutil

    import aekit

    seed_run = _seed_run(work)
    run_dir = work / "config-run"
    shutil.copytree(seed_run, run_dir, dirs_exist_ok=True)

    def run(data: bytes) -> None:
        (run_dir / "config.json").write_bytes(data)
        aekit.load(run_dir)

    return (seed_run / "config.json").read_bytes(), run


def mutate_npy_header(data: bytes, rng: random.Random) -> bytes:
    """A ``.npy`` whose header lies: another shape (huge, negative, empty, many axes) or type, same data."""
    if rng.random() < 0.2:
        return mutate(data, rng)
    header_len = int.from_bytes(data[8:10], "little")
    body = data[10 + header_len :]
    shape = rng.choice([(2**31, 6, 6), (10**12,), (4, 6, 6, 10**6), (-1, 6, 6), (), (0, 6, 6), (4, 6, 7),
                        (4,) * 40, (2**62, 2**62), (4, 6, 6)])
    descr = rng.choice(["|u1", "<f8", "<i8", "|b1", "<c16", "O", "|V4", "<U10", "|u1"])
    fortran = rng.choice(["False", "True"])
    header = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape!r}, }}".encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return data[:8] + len(header).to_bytes(2, "little") + header + body


def target_npy_header(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    from aekit.data import load_dataset

    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).integers(0, 256, (4, 6, 6), dtype=np.uint8))

    def run(data: bytes) -> None:
        path = work / "images.npy"
        path.write_bytes(data)
        for stream in (False, True):
            load_dataset(str(path), stream=stream)

    return buffer.getvalue(), run


TEXTS = (b"1,2,3\n4,5,6\n", b'{"images": [[0, 1], [2, 3]]}', b"# notes\nThese are not images.\n", b"",
         b"\x93NUMPY but not really", b"PK\x03\x04 not a zip", b"\x89PNG\r\n\x1a\n not a png")


def mutate_text(data: bytes, rng: random.Random) -> bytes:
    return mutate(rng.choice(TEXTS), rng) if rng.random() < 0.5 else rng.choice(TEXTS)


def target_text(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    """Text under binary names: each loader must call it what it is (not a pickle, not a crash)."""
    import shutil

    import aekit
    from aekit.data import load_dataset, load_images

    seed_run = _seed_run(work)
    run_dir = work / "text-run"
    folder = work / "text-images"
    folder.mkdir(exist_ok=True)
    errors = []

    def attempt(fn) -> None:
        from aekit.errors import AekitError

        try:
            fn()
        except AekitError as err:
            errors.append(err)

    def run(data: bytes) -> None:
        errors.clear()
        for name in ("t.npy", "t.npz"):
            (work / name).write_bytes(data)
            attempt(lambda name=name: load_dataset(str(work / name)))
        (folder / "a.png").write_bytes(data)
        attempt(lambda: load_images(str(folder)))
        shutil.copytree(seed_run, run_dir, dirs_exist_ok=True)
        (run_dir / "model.safetensors").write_bytes(data)
        attempt(lambda: aekit.load(run_dir))
        for err in errors:
            if "pickle" in str(err) and not data.startswith((b"\x80", b"PK")):
                raise AssertionError(f"text called a pickle: {err}")
        if errors:
            raise errors[0]

    return TEXTS[0], run


def _seed_codec_run(work: Path, latent: str = "entropy") -> Path:
    import numpy as np
    import torch

    import aekit

    seed_run = work / f"seed-codec-run-{latent}"
    if not seed_run.exists():
        blocks = np.random.default_rng(0).integers(0, 256, (24, 3, 3, 3)).repeat(8, 2).repeat(8, 3)
        images = torch.from_numpy(blocks.astype(np.uint8))
        splits = aekit.Splits(aekit.ImageSet(images[:20], None, "t"), aekit.ImageSet(images[20:], None, "v"))
        aekit.train("ae", out=seed_run, epochs=1, arch="resnet", hidden=(8, 16), latent_channels=4, latent=latent,
                    likelihood="gaussian", lmbda=0.01, splits=splits, progress=False, log=None)
    return seed_run


def target_aek(work: Path, latent: str = "entropy") -> tuple[bytes, Callable[[bytes], None]]:
    """An .aek file decoded by the model that wrote it (a small memory budget: a huge declared image is refused)."""
    import os

    import torch

    import aekit
    from aekit import codec

    model = aekit.load(_seed_codec_run(work, latent)).model
    image = torch.randint(0, 256, (3, 21, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def run(data: bytes) -> None:
        before = os.environ.get("AEKIT_MEMORY_BUDGET")
        os.environ["AEKIT_MEMORY_BUDGET"] = "64M"
        try:
            codec.decompress(model, data)
        finally:
            if before is None:
                os.environ.pop("AEKIT_MEMORY_BUDGET")
            else:
                os.environ["AEKIT_MEMORY_BUDGET"] = before

    return codec.compress(model, image), run


def target_aek_hyperprior(work: Path) -> tuple[bytes, Callable[[bytes], None]]:
    """The same for a scale-hyperprior model's files (a side code, then y coded by the scales it gives)."""
    return target_aek(work, "hyperprior")


def mutate_aek(data: bytes, rng: random.Random) -> bytes:
    """Byte mutations, then (mostly) a header made consistent again (length, checksum), so that the damage
    reaches the range decoder; or one header field set to an extreme."""
    from aekit import codec

    out = mutate(data, rng)
    size = codec.HEADER.size
    if len(out) < size or rng.random() < 0.2:
        return out
    fields = list(codec.HEADER.unpack_from(out))
    payload = out[size:][: 4 * ((len(out) - size) // 4)]
    if rng.random() < 0.5:  # one field at an extreme: 3 channels, 4 height, 5 width, 6 words
        i = rng.choice((3, 4, 5, 6))
        fields[i] = rng.choice((0, 1, 2, 255, 2**16, 2**16 + 1, 2**32 - 1)) if i != 3 else rng.choice((0, 1, 2, 3, 255))
    else:
        fields[6] = len(payload) // 4
    fields[7] = zlib.crc32(payload)
    return codec.HEADER.pack(*fields) + payload


TARGETS = {
    "idx": target_idx,
    "idx_gz": target_idx_gz,
    "image_folder": target_image_folder,
    "array": target_array,
    "checkpoint": target_checkpoint,
    "config": target_config,
    "npy_header": target_npy_header,
    "text": target_text,
    "aek": target_aek,
    "aek_hyperprior": target_aek_hyperprior,
}
# Targets mutated by structure rather than by bytes (the byte mutations of mutate() still reach them in tests).
MUTATORS = {"aek": mutate_aek, "aek_hyperprior": mutate_aek, "config": mutate_config, "npy_header": mutate_npy_header,
            "text": mutate_text}


def fuzz(name: str, n: int, seed: int = 0, log=print) -> dict:
    """Run ``n`` mutated inputs through one target; count loads, AekitErrors and anything else."""
    import warnings

    from aekit.errors import AekitError

    warnings.simplefilter("ignore")
    counts = {"inputs": 0, "loaded": 0, "aekit_error": 0, "other": 0}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        seed_bytes, run = TARGETS[name](Path(tmp))
        if name != "text":
            run(seed_bytes)  # the unmutated seed must load (the text target's never does)
        mutator = MUTATORS.get(name, mutate)
        for i in range(n):
            rng = random.Random(f"{seed}-{name}-{i}")
            data = mutator(seed_bytes, rng)
            counts["inputs"] += 1
            try:
                run(data)
                counts["loaded"] += 1
            except AekitError as err:
                counts["aekit_error"] += 1
                message = str(err)
                if not message or "\n" in message:
                    counts["other"] += 1
                    failures.append(f"{name} #{i}: AekitError message not one line: {message!r}")
            except Exception as err:  # noqa: BLE001 - this is what the fuzzer looks for
                counts["other"] += 1
                failures.append(f"{name} #{i}: {type(err).__name__}: {err}"[:300])
    for failure in failures[:10]:
        log("  " + failure)
    return {**counts, "failures": failures[:50]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-target", type=int, default=2000)
    parser.add_argument("--only", nargs="+", default=None, choices=sorted(TARGETS), help="fuzz only these targets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "fuzz.json"))
    args = parser.parse_args()
    results = {}
    t0 = time.perf_counter()
    for name in args.only or TARGETS:
        t = time.perf_counter()
        results[name] = fuzz(name, args.per_target, args.seed)
        r = results[name]
        print(f"{name:13s} {r['inputs']:6d} inputs: {r['loaded']:5d} loaded, {r['aekit_error']:5d} AekitError, "
              f"{r['other']:3d} other  ({time.perf_counter() - t:.0f} s)", flush=True)
    total = {k: sum(r[k] for r in results.values()) for k in ("inputs", "loaded", "aekit_error", "other")}
    summary = {"date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - t0, 1), "total": total,
               "targets": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"total: {total['inputs']} inputs, {total['other']} uncaught -> {'PASS' if total['other'] == 0 else 'FAIL'}")
    sys.exit(0 if total["other"] == 0 else 1)


if __name__ == "__main__":
    main()
