"""(Re)create the pretrained models shipped in ``src/aekit/pretrained/``.

One small MLP per family (ae, dae, sae, vae) and dataset (MNIST, Fashion-MNIST), trained by aekit
itself with the families' preset objectives, on the full training split, seed 0::

    python bench/make_pretrained.py --data-dir ../shared/data            # all 8, about 8 minutes on 2 cores
    python bench/make_pretrained.py --data-dir ../shared/data --only mnist-vae

``--data-dir`` holds ``mnist/`` and ``fashion-mnist/`` with the standard IDX ``.gz`` files.
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

import torch

import aekit
from aekit import pretrained
from aekit.data import load_dataset

DATASETS = ("mnist", "fashion-mnist")
FAMILIES = ("ae", "dae", "sae", "vae")
# Small on purpose: 784-128-64-32 is about 0.9 MB of float32 weights, so all 8 ship in about 7 MB.
OPTIONS = {"arch": "mlp", "hidden": (128, 64), "latent_dim": 32, "epochs": 5, "batch_size": 128, "lr": 1e-3, "seed": 0}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "aekit" / "pretrained"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", help="folder with mnist/ and fashion-mnist/ IDX files")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these models, e.g. mnist-vae")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the model folders go")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    # Never record a machine's absolute path: cards name a relative --data-dir or a placeholder.
    data_dir_text = args.data_dir if not Path(args.data_dir).is_absolute() else "DATA_DIR"

    names = [f"{d}-{f}" for d in DATASETS for f in FAMILIES]
    wanted = args.only or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names)}")
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


_DESCRIPTIONS = {
    "ae": "deterministic code, reconstruction loss",
    "dae": "denoising: Gaussian corruption std 0.5, reconstructs the clean image",
    "sae": "sparse: sigmoid codes, KL sparsity rho 0.05, weight 10",
    "vae": "variational: diagonal-Gaussian posterior, negative ELBO with beta 1",
}

if __name__ == "__main__":
    sys.exit(main())
