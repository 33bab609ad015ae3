"""Classical-codec baselines on Kodak, as rate-distortion curves: JPEG, WebP and AVIF through Pillow, and a
learning-free block-PCA transform code (uniform quantization + a range coder). A library for
``bench/compression.py`` and a script:

    python bench/codec_baselines.py                     # all four curves; writes bench/results/codec_baselines.json
    python bench/codec_baselines.py --codecs jpeg,avif  # some of them
    python bench/codec_baselines.py --no-write          # print only

(Not named ``codecs.py``: Python's standard ``codecs`` module is loaded at start-up, so ``import codecs`` would never
reach a file of that name. Import it as bench/photos.py imports faces.py: ``sys.path.insert(0, str(HERE))``, then
``import codec_baselines``.)

Data (``../shared/data/``, read from there, never committed; ``--data-dir`` elsewhere): the 24 Kodak PNGs
(768x512, some portrait), used for nothing but these numbers; block-PCA's transform and probability tables come
from the 280 BSDS500 training photos of bench/photos.py (its ``photo_cache``, seed-0 split).

Each point is the mean over the images of each image's own values, as CompressAI reports Kodak: bits per pixel =
8 x the real compressed size in bytes / (H x W); PSNR in dB over RGB in [0, 1]; MS-SSIM over RGB
(``aekit.metrics.rd.ms_ssim``: per channel, then averaged).

- JPEG: Pillow (libjpeg-turbo), 4:2:0 (``subsampling=2``), ``optimize=True`` (optimized Huffman tables), baseline.
- WebP: Pillow (libwebp), lossy, ``method=6`` (slowest, best).
- AVIF: Pillow (libavif with libaom), Pillow's defaults (``speed=6``, 4:2:0, 8-bit, full range), one thread.
- Block-PCA: non-overlapping 4x4x3 RGB blocks (48 values in 8-bit units, images padded to a multiple of 4 by edge
  replication and cropped back), projected on all 48 principal components of <= 300,000 blocks (a seeded subsample)
  of the training photos. Every coefficient is rounded with one uniform step ``q`` (the transform is orthonormal, so
  the same step for all is the high-rate MSE-optimal choice). Each component k has its own categorical model: the
  frequencies of the rounded coefficient on the training blocks, plus one (Laplace), over the support
  ``|symbol| <= ceil(255 sqrt(48) / q) + 1``, which holds every block of 8-bit pixels (a coefficient is a unit vector
  times a block minus the mean, at most 255 sqrt(48) in size; asserted). The coefficients are coded component by
  component with constriction's range coder; the bits counted are the encoder's 32-bit words plus a 64-bit header
  (height and width in 16 bits each, q as a float32). The stream is decoded and the decoded coefficients are
  checked equal to the encoded ones; the image is rebuilt from the decoded ones, rounded to 8 bits.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import photos  # noqa: E402  (bench/ is not a package): blocks, unblocks, photo_cache, kodak

RESULTS_JSON = HERE / "results" / "codec_baselines.json"
SEED, BLOCK, PCA_BLOCKS, HEADER_BITS = 0, 4, 300_000, 64
PILLOW_OPTIONS = {  # Image.save keywords of each codec; "quality" is the swept one
    "jpeg": {"format": "JPEG", "subsampling": 2, "optimize": True},
    "webp": {"format": "WEBP", "method": 6},
    "avif": {"format": "AVIF", "speed": 6, "max_threads": 1},
}
QUALITIES = {  # about 0.1 to 1.5 bpp on Kodak, and a point or two beyond
    "jpeg": (3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80),
    "webp": (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90),
    "avif": (5, 10, 20, 30, 40, 50, 60, 70, 75),
}
STEPS = (32, 45, 64, 90, 128, 181, 256, 362, 512, 724)  # block-PCA steps (8-bit units): about 2 to 0.1 bpp


def kodak(data_dir: Path) -> list:
    """The Kodak images of ``data_dir / "kodak"`` as uint8 (3, H, W) tensors, in sorted file order."""
    images = photos.kodak(Path(data_dir))
    if not images:
        raise FileNotFoundError(f"no kodim*.png in {Path(data_dir) / 'kodak'}: pass --data-dir")
    return images


def measure(original, decoded, n_bits: int) -> dict:
    """bpp, RGB PSNR (dB) and MS-SSIM of one decoded image against its uint8 (3, H, W) original."""
    from aekit.metrics.pixels import psnr_per_image
    from aekit.metrics.rd import ms_ssim

    x, y = original[None].double() / 255, decoded[None].double() / 255  # (1, 3, H, W) in [0, 1]
    return {"bpp": n_bits / (original.shape[-2] * original.shape[-1]),
            "psnr_db": float(psnr_per_image(y, x)[0]), "ms_ssim": float(ms_ssim(y, x)[0])}


def mean_point(measured: list[dict], **setting) -> dict:
    """Each image's values averaged over the images, after the setting that produced them."""
    return {**setting, **{key: sum(m[key] for m in measured) / len(measured) for key in ("bpp", "psnr_db", "ms_ssim")}}


def pillow_roundtrip(image, codec: str, quality: int):
    """Encode a uint8 (3, H, W) image in memory with Pillow, decode it back: (compressed bytes, uint8 (3, H, W))."""
    import numpy as np
    import torch
    from PIL import Image

    if codec not in PILLOW_OPTIONS:
        raise ValueError(f"unknown codec {codec!r}: choose from {', '.join(PILLOW_OPTIONS)}")
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, quality=quality, **PILLOW_OPTIONS[codec])
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == PILLOW_OPTIONS[codec]["format"], decoded.format
        array = np.asarray(decoded.convert("RGB"))
    return data, torch.from_numpy(array.transpose(2, 0, 1).copy())


def pillow_curve(images: list, codec: str, qualities=None) -> list[dict]:
    """The rate-distortion curve of a Pillow codec ("jpeg", "webp" or "avif") over uint8 (3, H, W) images.

    Returns one dict per quality: ``quality``, and the means over the images of ``bpp`` (the real file size),
    ``psnr_db`` and ``ms_ssim``.
    """
    if codec not in PILLOW_OPTIONS:
        raise ValueError(f"unknown codec {codec!r}: choose from {', '.join(PILLOW_OPTIONS)}")
    points = []
    for quality in qualities or QUALITIES[codec]:
        measured = []
        for image in images:
            data, decoded = pillow_roundtrip(image, codec, quality)
            measured.append(measure(image, decoded, 8 * len(data)))
        points.append(mean_point(measured, quality=quality))
    return points


class BlockPCA:
    """All 48 principal components of 4x4x3 blocks in 8-bit units, and the training blocks' coefficients."""

    def __init__(self, train_images: list, max_blocks: int = PCA_BLOCKS, seed: int = SEED):
        import numpy as np
        import torch

        rows = torch.cat([photos.blocks(x, BLOCK) for x in train_images])  # uint8 (M, 48)
        pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_blocks]
        train = rows[pick].double().numpy()
        self.mean_ = train.mean(0)  # (48,)
        variances, vectors = np.linalg.eigh(np.cov(train, rowvar=False))
        self.components_ = vectors[:, ::-1].T.copy()  # (48, 48): orthonormal rows, decreasing variance
        self.explained_variance_ = variances[::-1].copy()
        self.train_coefficients_ = self.transform(train)  # (M, 48)
        self.bound_ = 255 * math.sqrt(train.shape[1])  # |coefficient| <= ||block - mean|| <= this, for 8-bit blocks

    def transform(self, rows):
        return (rows - self.mean_) @ self.components_.T  # (B, 48) -> (B, 48)

    def inverse_transform(self, coefficients):
        return coefficients @ self.components_ + self.mean_

    def models(self, step: float) -> tuple[int, list]:
        """The support bound R and, per component, a categorical model over symbols 0..2R (coefficient / step + R)."""
        import constriction
        import numpy as np

        support = math.ceil(self.bound_ / step) + 1
        symbols = np.rint(self.train_coefficients_ / step).astype(np.int64) + support  # (M, 48) in 0..2R
        width = 2 * support + 1
        offsets = np.arange(symbols.shape[1]) * width
        counts = np.bincount((symbols + offsets).ravel(), minlength=width * symbols.shape[1]).reshape(-1, width) + 1
        return support, [constriction.stream.model.Categorical(c.astype(np.float64), perfect=False) for c in counts]

    def roundtrip(self, image, step: float, support: int, models: list):
        """Code a uint8 (3, H, W) image with quantization step ``step``: (compressed bits, decoded uint8 (3, H, W))."""
        import constriction
        import numpy as np
        import torch

        c, h, w = image.shape
        ph, pw = -h % BLOCK, -w % BLOCK
        padded = torch.from_numpy(np.pad(image.numpy(), ((0, 0), (0, ph), (0, pw)), mode="edge"))
        rows = photos.blocks(padded, BLOCK).double().numpy()  # (B, 48)
        symbols = np.rint(self.transform(rows) / step).astype(np.int64)
        assert np.abs(symbols).max() <= support, "a coefficient outside the provable bound"
        symbols = (symbols + support).astype(np.int32)  # constriction takes int32 only
        encoder = constriction.stream.queue.RangeEncoder()
        for k, model in enumerate(models):
            encoder.encode(np.ascontiguousarray(symbols[:, k]), model)
        words = encoder.get_compressed()  # uint32
        decoder = constriction.stream.queue.RangeDecoder(words)
        decoded = np.stack([decoder.decode(model, len(symbols)) for model in models], 1)  # queue: first in, first out
        assert np.array_equal(decoded, symbols), "the range decoder did not reproduce the coefficients"
        pixels = self.inverse_transform((decoded.astype(np.float64) - support) * step)
        pixels = torch.from_numpy(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
        out = photos.unblocks(pixels, c, h + ph, w + pw, BLOCK)[:, :h, :w]
        return 32 * len(words) + HEADER_BITS, out.contiguous()


def block_pca_curve(train_images: list, images: list, steps=STEPS, pca: BlockPCA | None = None) -> list[dict]:
    """The rate-distortion curve of block-PCA + uniform quantization + range coding (see the module docstring).

    ``train_images`` (uint8 (3, H, W) tensors, e.g. the BSDS500 training photos) give the transform and the
    probability tables; ``images`` are coded. Returns one dict per step: ``step``, and the means over the images of
    ``bpp``, ``psnr_db`` and ``ms_ssim``.
    """
    pca = pca or BlockPCA(train_images)
    points = []
    for step in steps:
        support, models = pca.models(step)
        measured = []
        for image in images:
            bits, decoded = pca.roundtrip(image, step, support, models)
            measured.append(measure(image, decoded, bits))
        points.append(mean_point(measured, step=step))
    return points


def versions() -> dict:
    from importlib.metadata import version

    import numpy as np
    import PIL
    import torch
    from PIL import features

    avif_codecs = None
    if features.check("avif"):
        from PIL import _avif

        avif_codecs = _avif.codec_versions()
    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
            "libwebp": features.version("webp"), "libavif": features.version("avif"), "avif_codecs": avif_codecs,
            "constriction": version("constriction")}


def table(name: str, points: list[dict], key: str) -> str:
    lines = [f"{name}", f"  {key:>8} {'bpp':>7} {'PSNR dB':>8} {'MS-SSIM':>8}"]
    lines += [f"  {p[key]:>8} {p['bpp']:7.3f} {p['psnr_db']:8.2f} {p['ms_ssim']:8.4f}" for p in points]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--codecs", default="jpeg,webp,avif,block_pca",
                        help="comma-separated, from jpeg, webp, avif, block_pca")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write codec_baselines.json")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = sorted(set(chosen) - {*PILLOW_OPTIONS, "block_pca"})
    if unknown:
        parser.error(f"unknown codec(s) {', '.join(unknown)}")
    sys.path.insert(0, str(REPO / "src"))
    import numpy as np
    import torch
    from PIL import AvifImagePlugin

    from aekit.metrics.rd import bd_rate

    AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # the AVIF decoder's threads (the encoder's: max_threads above)
    data_dir = Path(args.data_dir)
    images = kodak(data_dir)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              **versions(), "kodak_images": len(images),
              "point": "means over the images of each image's bpp (8 x bytes / pixels), RGB PSNR and MS-SSIM",
              "curves": {}}
    for codec in chosen:
        t0 = time.perf_counter()
        if codec == "block_pca":
            train = list(torch.from_numpy(np.load(photos.photo_cache(data_dir))["x_train"]))
            pca = BlockPCA(train)
            points = block_pca_curve(train, images, pca=pca)
            entry = {"settings": f"4x4x3 blocks, all 48 PCA components of {len(pca.train_coefficients_):,} blocks of "
                                 f"{len(train)} BSDS500 training photos, one uniform step, per-component categorical "
                                 f"models (Laplace-smoothed training frequencies), constriction range coder, "
                                 f"{HEADER_BITS}-bit header", "points": points}
            key = "step"
        else:
            options = {k: v for k, v in PILLOW_OPTIONS[codec].items() if k != "format"}
            entry = {"settings": f"Pillow {codec.upper()}, {options}", "points": pillow_curve(images, codec)}
            key = "quality"
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        result["curves"][codec] = entry
        print(table(f"{codec}: {entry['settings']} ({entry['seconds']} s)", entry["points"], key), flush=True)
    if "jpeg" in result["curves"]:
        jpeg = result["curves"]["jpeg"]["points"]
        for codec, entry in result["curves"].items():
            if codec != "jpeg":
                pts = entry["points"]
                entry["bd_rate_vs_jpeg_percent"] = bd_rate([p["bpp"] for p in jpeg], [p["psnr_db"] for p in jpeg],
                                                           [p["bpp"] for p in pts], [p["psnr_db"] for p in pts])
                print(f"BD-rate of {codec} against JPEG (PSNR, PCHIP): {entry['bd_rate_vs_jpeg_percent']:+.1f}%")
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS_JSON.relative_to(REPO)}")


if __name__ == "__main__":
    main()
