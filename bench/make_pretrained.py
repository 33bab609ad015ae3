"""(Re)create the pretrained models shipped in ``src/aekit/pretrained/``.

One small MLP per family (ae, dae, sae, vae) and dataset (MNIST, Fashion-MNIST), trained by aekit
itself with the families' preset objectives, on the full training split, seed 0; and the blind colour photo
denoiser of ``bench/denoise.py`` (``photo-denoise``: its committed weights, trained there, copied here with a card)::

    python bench/make_pretrained.py --data-dir ../shared/data            # all, about 9 minutes on 2 cores
    python bench/make_pretrained.py --data-dir ../shared/data --only mnist-vae
    python bench/make_pretrained.py --data-dir ../shared/data --only photo-denoise

``--data-dir`` holds ``mnist/`` and ``fashion-mnist/`` with the standard IDX ``.gz`` files, and ``cbsd68/`` (the
photo denoiser's card measures it there at sigma 25; its ``check`` runs on :func:`aekit.pretrained.check_photo`).
Each model folder gets the run's ``config.json``, ``model.safetensors`` and ``metrics.jsonl``, and a
``card.json`` with the command, seed, data, options, and the metrics of :func:`aekit.pretrained.measure`
on the test split (10,000 images) and, as an always-available check, on the mnist-5k test split.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit import pretrained
from aekit.data import load_dataset

DATASETS = ("mnist", "fashion-mnist")
FAMILIES = ("ae", "dae", "sae", "vae")
# Small on purpose: 784-128-64-32 is about 0.9 MB of float32 weights, so all 8 ship in about 7 MB.
OPTIONS = {"arch": "mlp", "hidden": (128, 64), "latent_dim": 32, "epochs": 5, "batch_size": 128, "lr": 1e-3, "seed": 0}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "aekit" / "pretrained"
HERE = Path(__file__).resolve().parent
# Shipped photo models: name -> bench/denoise.py's run whose committed weights it ships, and the test set (a
# folder of ../shared/data) its card is measured on.
PHOTO = {"photo-denoise": ("denoise-rgb", "cbsd68"), "photo-denoise-grey": ("denoise-grey", "set12")}
PHOTO_SIGMA = 25 / 255  # the noise of the photo denoiser's card metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", help="folder with mnist/ and fashion-mnist/ IDX files")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these models, e.g. mnist-vae")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the model folders go")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    # Never record a machine's absolute path: cards name a relative --data-dir or a placeholder.
    data_dir_text = args.data_dir if not Path(args.data_dir).is_absolute() else "DATA_DIR"

    names = [f"{d}-{f}" for d in DATASETS for f in FAMILIES] + list(PHOTO)
    wanted = args.only or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    for name in PHOTO:
        if name in wanted:
            photo_model(name, Path(args.data_dir), args.out, data_dir_text)
    if not any(n.startswith(DATASETS) for n in wanted):
        return 0
    check = aekit.load_dataset("mnist-5k", progress=False).test

    for dataset in DATASETS:
        if not any(n.startswith(f"{dataset}-") and n.removeprefix(f"{dataset}-") in FAMILIES for n in wanted):
            continue
        splits = load_dataset(dataset, data_dir=args.data_dir, download=False, progress=False)
        for family in FAMILIES:
            name = f"{dataset}-{family}"
            if name not in wanted:
                continue
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="aekit-pretrained-") as tmp:
                run = aekit.train(family, out=Path(tmp) / name, splits=splits, progress=False,
                                    log=lambda line, name=name: print(f"{name}: {line}", flush=True),
                                    data=dataset, **OPTIONS)
                seconds = time.perf_counter() - t0
                card = {
                    "name": name,
                    "family": family,
                    "description": f"{family.upper()} ({_DESCRIPTIONS[family]}), MLP 784-128-64-32, "
                                   f"trained by aekit on the {len(splits.train):,} {dataset} training images",
                    "command": f"python bench/make_pretrained.py --data-dir {data_dir_text} --only {name}",
                    "equivalent_train_command": (
                        f"aekit train --model {family} --arch mlp --data {dataset} --data-dir {data_dir_text} "
                        f"--hidden 128,64 --latent-dim 32 --epochs {OPTIONS['epochs']} --batch-size "
                        f"{OPTIONS['batch_size']} --lr {OPTIONS['lr']:g} --seed {OPTIONS['seed']}"
                    ),
                    "seed": OPTIONS["seed"],
                    "options": {"family": family, **OPTIONS},
                    "data": {"name": dataset, "train_images": len(splits.train), "test_images": len(splits.test)},
                    "metrics": {"data": dataset, "split": "test", **pretrained.measure(run, splits.test.images)},
                    "check": {"data": "mnist-5k", "split": "test", **pretrained.measure(run, check.images)},
                    "train_seconds": round(seconds, 1),
                    "aekit_version": aekit.__version__,
                    "torch_version": torch.__version__,
                    "python_version": platform.python_version(),
                }
                pretrained.copy_run(run.path, args.out / name, card)
            m = card["metrics"]
            print(f"{name}: test loss {m['loss']:.2f}, psnr {m['psnr_db']:.2f} dB, "
                  f"denoised psnr {m['psnr_denoised_db']:.2f} dB, {seconds:.0f}s", flush=True)
    return 0


def photo_model(name: str, data_dir: Path, out: Path, data_dir_text: str) -> None:
    """Ship ``bench/denoise.py``'s committed run ``PHOTO[name]`` as ``name``, with a card measured here."""
    import json

    sys.path.insert(0, str(HERE))
    import denoise

    run_name, test_set = PHOTO[name]
    spec = next(s for s in denoise.RUNS if s.name == run_name)
    weights = denoise.WEIGHTS / spec.name
    run = aekit.load(weights)
    colour = run.config.model.channels == 3
    curve = [json.loads(line) for line in (weights / "metrics.jsonl").read_text().splitlines()]
    photos = denoise.training_files(data_dir)  # checks that CBSD68's 68 are there
    images = [torch.from_numpy(np.round(255 * image)).to(torch.uint8) for _, image in
              denoise.test_images(data_dir, test_set, None)]  # (H, W, 3) or (H, W)
    images = [image.permute(2, 0, 1) if colour else image[None] for image in images]
    check = pretrained.check_photo(grey=not colour)
    hidden = ",".join(map(str, run.config.model.hidden))
    card = {
        "name": name,
        "family": "dae",
        "description": f"blind photo denoiser ({'colour' if colour else 'grey'}): a U-Net denoising autoencoder "
                       f"(widths {hidden}) trained on random 96x96 crops of BSDS500 train + val minus the 68 CBSD68 "
                       f"images{'' if colour else ' in luminance'}, Gaussian noise of std 0-55/255 (not clipped); any "
                       "image size, any noise level in that range, never told it",
        "command": f"python bench/make_pretrained.py --data-dir {data_dir_text} --only {name}",
        "equivalent_train_command": " ".join(spec.command("BSDS500-minus-CBSD68.npz", f"runs/{spec.name}")),
        "seed": run.config.train.seed,
        **({"training": denoise.HISTORY[spec.name]} if spec.name in denoise.HISTORY else {}),
        "options": {"family": "dae", "arch": run.config.model.arch, "hidden": list(run.config.model.hidden),
                    "epochs": len(curve), "epochs_planned": spec.epochs, "steps": curve[-1]["step"]},
        "data": {"name": "bsds500 minus cbsd68", "train_images": len(photos) - denoise.HELD_OUT,
                 "held_out_images": denoise.HELD_OUT, "test_images": len(images)},
        "metrics": {"data": test_set, "split": "test", **pretrained.measure_denoiser(run, images, PHOTO_SIGMA)},
        "check": {"data": "aekit.pretrained.check_photo()" + ("" if colour else " in luminance"),
                  "split": "synthetic", **pretrained.measure_denoiser(run, [check], PHOTO_SIGMA)},
        "benchmark": "bench/denoise.py (docs/results.md, Photo denoising): against BM3D, non-local means and wavelets",
        "aekit_version": aekit.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }
    pretrained.copy_run(weights, out / name, card)
    config = json.loads((out / name / "config.json").read_text())  # the data by its file's name, not a bench path
    config["data"]["data"] = Path(config["data"]["data"]).name
    (out / name / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    m = card["metrics"]
    print(f"{name}: {test_set} at sigma 25: {m['psnr_noisy_db']:.2f} -> {m['psnr_denoised_db']:.2f} dB", flush=True)


_DESCRIPTIONS = {
    "ae": "deterministic code, reconstruction loss",
    "dae": "denoising: Gaussian corruption std 0.5, reconstructs the clean image",
    "sae": "sparse: sigmoid codes, KL sparsity rho 0.05, weight 10",
    "vae": "variational: diagonal-Gaussian posterior, negative ELBO with beta 1",
}

if __name__ == "__main__":
    sys.exit(main())
