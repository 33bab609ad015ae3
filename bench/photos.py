"""Photos (issue 19, point 5): a spatial-latent autoencoder trained on BSDS500 crops reconstructs the 24 Kodak images
at full size, against block-PCA with as many coefficients per pixel, in one run.

    python bench/photos.py                   # train what has no committed weights (resumable), evaluate, write
    python bench/photos.py --baseline-only   # block-PCA on Kodak alone (no model needed)
    python bench/photos.py --evaluate-only   # re-check every number from the committed weights

Data (``../shared/data/``, read from there, never committed): the 300 photos of BSDS500 ``train/`` and ``val/``
(481x321; portrait ones turned a quarter to landscape so that all share one shape), split by a seeded permutation
(seed 0) into 280 for training and 20 whose centre crops give the test loss during training; the 24 Kodak PNGs
(768x512, some portrait) are the test set and are used for nothing else.

The model: ``--downsample 4 --latent-channels 4`` (f = 4, 4 channels: 4 / 16 = 0.25 code numbers per pixel, against
48 values per 4x4 RGB block), trained on random 128x128 crops with flips. Block-PCA: non-overlapping 4x4x3 blocks
(48 values) projected on the 4 leading components of blocks from the same 280 training photos (a seeded
subsample), reconstructed and clipped to [0, 1]: the same 4 numbers per 16 pixels. PSNR is over RGB in [0, 1],
per image, averaged over the 24.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import runs  # noqa: E402  (bench/ is not a package): the command line, training and docs helpers

WEIGHTS = HERE / "weights" / "photos"
SCRATCH = HERE / "results" / "tmp" / "photos"
RESULTS_JSON = HERE / "results" / "photos.json"
SECTION = "## Photos: Kodak at full size against block-PCA"
SEED, N_TEST, BLOCK, COMPONENTS, PCA_BLOCKS = 0, 20, 4, 4, 300_000


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    options: tuple[str, ...]
    epochs: int
    target: str

    def command(self, data: str, out: str) -> list[str]:
        return ["aekit", "train", "--model", "ae", "--arch", "resnet", *self.options, "--likelihood", "gaussian",
                "--crop", "128", "--flip", "--data", data, "--epochs", str(self.epochs), "--batch-size", "16",
                "--lr", "1e-3", "--lr-schedule", "cosine", "--seed", str(SEED), "--out", out]


RUNS = (
    Spec("photo-ae-f4c4", ("--downsample", "4", "--latent-channels", "4"), 120,
         "all 24 Kodak images at full size, >= 2 dB above block-PCA with 4 coefficients per 4x4 block"),
)


def photo_cache(data_dir: Path) -> Path:
    """BSDS500 train + val as one uint8 (N, 3, 321, 481) array (portraits turned), split 280 / 20."""
    import numpy as np
    import torch
    from PIL import Image

    path = HERE / "results" / "tmp" / "bsds500-landscape.npz"
    if path.exists():
        return path
    files = sorted((data_dir / "bsds500" / "train").glob("*.jpg")) + sorted((data_dir / "bsds500" / "val").glob("*.jpg"))
    photos = []
    for f in files:
        image = np.asarray(Image.open(f).convert("RGB"))
        photos.append(image if image.shape[0] <= image.shape[1] else np.rot90(image))
    images = np.stack(photos).transpose(0, 3, 1, 2).copy()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED)).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=images[np.sort(perm[N_TEST:])], x_test=images[np.sort(perm[:N_TEST])])
    return path


def kodak(data_dir: Path) -> list:
    import numpy as np
    import torch
    from PIL import Image

    files = sorted((data_dir / "kodak").glob("kodim*.png"))
    return [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1).copy()) for f in files]


def blocks(image, b: int = BLOCK):
    """(C, H, W) -> (H/b * W/b, C*b*b) non-overlapping blocks (H and W cropped to multiples of b)."""
    c, h, w = image.shape
    x = image[:, : h - h % b, : w - w % b]
    return x.reshape(c, h // b, b, w // b, b).permute(1, 3, 0, 2, 4).reshape(-1, c * b * b)


def unblocks(rows, c: int, h: int, w: int, b: int = BLOCK):
    return rows.reshape(h // b, w // b, c, b, b).permute(2, 0, 3, 1, 4).reshape(c, h, w)


def block_pca(train_images, test_images: list) -> dict:
    """PCA with COMPONENTS components on 4x4x3 blocks of the training photos; PSNR on each test image."""
    import numpy as np
    import torch
    from sklearn.decomposition import PCA

    from aekit.metrics.pixels import psnr_per_image

    rows = torch.cat([blocks(x) for x in train_images]).float().div(255)
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(SEED))[:PCA_BLOCKS]
    pca = PCA(n_components=COMPONENTS, random_state=SEED).fit(rows[pick].numpy())
    psnrs = []
    for image in test_images:
        x = image.float().div(255)
        c, h, w = x.shape
        flat = blocks(x).numpy()
        recon = torch.from_numpy(np.clip(pca.inverse_transform(pca.transform(flat)), 0, 1).astype(np.float32))
        psnrs.append(float(psnr_per_image(unblocks(recon, c, h, w)[None], x[None])[0]))
    return {"psnr_db": psnrs, "explained_variance": float(pca.explained_variance_ratio_.sum()),
            "blocks_fitted": int(len(pick))}


def evaluate_model(spec: Spec, test_images: list) -> dict:
    import aekit
    from aekit.metrics.pixels import psnr_per_image

    run = aekit.load(WEIGHTS / spec.name)
    psnrs, seconds = [], 0.0
    for image in test_images:
        t0 = time.perf_counter()
        recon = run.model.reconstruct(image[None], batch_size=1)
        seconds += time.perf_counter() - t0
        assert recon.shape[-2:] == image.shape[-2:]
        psnrs.append(float(psnr_per_image(recon, image[None].float() / 255)[0]))
    pixels = sum(x.shape[-1] * x.shape[-2] for x in test_images)
    curve = [json.loads(line) for line in (WEIGHTS / spec.name / "metrics.jsonl").read_text().splitlines()]
    return {"run": spec.name, "code": f"{run.config.model.latent_channels} x H/{run.config.model.factor} x "
            f"W/{run.config.model.factor}", "psnr_db": psnrs, "megapixels_per_second": pixels / seconds / 1e6,
            "epochs": len(curve), "train_seconds": round(sum(r["epoch_seconds"] for r in curve), 1),
            "parameters": sum(p.numel() for p in run.model.parameters()), "target": spec.target,
            "command": " ".join(spec.command("BSDS500.npz", f"runs/{spec.name}")),
            "weights": f"bench/weights/photos/{spec.name}"}


def markdown(result: dict) -> str:
    pca = result["block_pca"]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    lines = [SECTION, "",
             f"The 24 Kodak images at full size (768x512), RGB PSNR per image averaged; block-PCA keeps {COMPONENTS} "
             f"of the 48 values of each 4x4 RGB block (PCA fitted on {pca['blocks_fitted']:,} blocks of the 280 "
             f"BSDS500 training photos, {100 * pca['explained_variance']:.1f}% of their variance), in the same run "
             f"({result['date']}, {result['machine']}).", "",
             "| method | numbers per pixel | mean PSNR dB | worst image dB | mean gain | smallest gain | "
             "mean >= +2 dB? | every image? |",
             "|---|---:|---:|---:|---:|---:|---|---|",
             f"| block-PCA, {COMPONENTS} of 48 | 0.25 | {mean(pca['psnr_db']):.2f} | {min(pca['psnr_db']):.2f} "
             "| | | | |"]
    for r in result["rows"]:
        gains = [a - b for a, b in zip(r["psnr_db"], pca["psnr_db"])]
        lines.append(f"| {r['run']} ({r['code']}) | 0.25 | {mean(r['psnr_db']):.2f} | {min(r['psnr_db']):.2f} | "
                     f"{mean(gains):+.2f} | {min(gains):+.2f} | {'yes' if mean(gains) >= 2 else 'no'} | "
                     f"{'yes' if min(gains) >= 2 else 'no'} |")
    lines += ["", "`python bench/photos.py --evaluate-only` re-checks every number from `bench/weights/photos/`."]
    lines += [f"- {r['run']}: `{r['command']}`; {r['epochs']} epochs, {r['train_seconds'] / 3600:.1f} h; "
              f"{r['megapixels_per_second']:.2f} megapixels/s reconstructing" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = runs.parser(__doc__)
    parser.add_argument("--baseline-only", action="store_true", help="block-PCA only; print, write nothing")
    args = parser.parse_args()
    log = runs.start()
    import numpy as np

    data_dir = Path(args.data_dir)
    data = photo_cache(data_dir)
    if not args.baseline_only and not args.evaluate_only:
        runs.train_unfinished(RUNS, data, log, SCRATCH, WEIGHTS)
        if args.train_only:
            return
    import torch

    test_images = kodak(data_dir)
    train_images = list(torch.from_numpy(np.load(data)["x_train"]))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              "torch": torch.__version__, "kodak_images": len(test_images),
              "block_pca": block_pca(train_images, test_images), "rows": []}
    log(f"block-PCA: {np.mean(result['block_pca']['psnr_db']):.2f} dB")
    if not args.baseline_only:
        missing = [s.name for s in RUNS if not (WEIGHTS / s.name / "model.safetensors").exists()]
        if missing:
            sys.exit(f"photos.py: error: no committed weights for {', '.join(missing)}: run without --evaluate-only")
        result["rows"] = [evaluate_model(spec, test_images) for spec in RUNS]
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(markdown(result))
    if not (args.no_write or args.baseline_only):
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        runs.write_section(markdown(result), SECTION)


if __name__ == "__main__":
    main()
