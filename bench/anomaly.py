"""One-class anomaly detection (issue 22): the protocol of Ruff et al. (2018, Deep SVDD) on MNIST and Fashion-MNIST,
aekit against PyOD's AutoEncoder and PCA reconstruction error, all computed in the same run.

    python bench/anomaly.py                     # train what has no committed weights, evaluate, write
    python bench/anomaly.py --evaluate-only     # re-check from the committed weights (the baselines are refitted)
    python bench/anomaly.py --only mnist/3      # one dataset, or one class

For each dataset and each class c: the training images of class c are the normal data, split by a seeded
permutation (seed 0) into 90% to train on and 10% held out to calibrate a threshold; the whole test set (10,000
images, c against the 9 other classes) is scored, and the AUROC (normal = c, anomalous = the rest, higher score =
more anomalous) is reported per class and averaged. The calibrated threshold (5% false positives on the held-out
normal images) is then applied to the test images of class c: its measured false-positive rate is reported.

- aekit: ``ae`` (MLP, --hidden 256,64, --latent-dim 16, gaussian likelihood, 20 epochs, batch 128, seed 0), scored
  by the reconstruction's mean squared error (``aekit.anomaly``, the family's default score).
- PyOD: ``pyod.models.auto_encoder.AutoEncoder`` with its defaults (installed in the bench environment only), fitted
  on the same normal images (flattened, in [0, 1]); its ``decision_function``.
- PCA: 16 components (as many numbers as aekit's code) fitted on the same images; reconstruction error.

Data: ``../shared/data/{mnist,fashion-mnist}`` (the standard IDX files, read from there). Writes
``bench/results/anomaly.json`` and the anomaly section of ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import faces  # noqa: E402  (bench/ is not a package): write_section

WEIGHTS = HERE / "weights" / "anomaly"
RESULTS_JSON = HERE / "results" / "anomaly.json"
SECTION = "## One-class anomaly detection: MNIST and Fashion-MNIST"
DATASETS = ("mnist", "fashion-mnist")
SEED, HELD_OUT, FPR, COMPONENTS = 0, 0.1, 0.05, 16
OPTIONS = {"arch": "mlp", "hidden": (256, 64), "latent_dim": COMPONENTS, "likelihood": "gaussian", "epochs": 20,
           "batch_size": 128, "seed": SEED}


def normal_split(images, labels, c: int):
    """The training images of class ``c``, split 90% / 10% by a seeded permutation: (train, held_out)."""
    import torch

    normal = images[labels == c]
    perm = torch.randperm(len(normal), generator=torch.Generator().manual_seed(SEED))
    cut = int(round(len(normal) * (1 - HELD_OUT)))
    return normal[perm[:cut].sort().values], normal[perm[cut:].sort().values]


def train_aekit(dataset: str, c: int, train, held_out, log) -> None:
    import shutil
    import tempfile

    import torch

    import aekit

    target = WEIGHTS / dataset / str(c)
    with tempfile.TemporaryDirectory() as tmp:
        splits = aekit.Splits(aekit.ImageSet(train, None, f"{dataset}-{c}"),
                              aekit.ImageSet(held_out, None, f"{dataset}-{c}-held-out"))
        run = aekit.train("ae", out=Path(tmp) / "run", splits=splits, progress=False, log=None, **OPTIONS)
        if target.exists():
            shutil.rmtree(target)
        run.save(target, dtype=torch.float16)
        shutil.copy2(Path(tmp) / "run" / "metrics.jsonl", target / "metrics.jsonl")
    log(f"  trained {dataset}/{c}")


def evaluate_class(dataset: str, c: int, splits, log) -> dict:
    import numpy as np
    import torch
    from pyod.models.auto_encoder import AutoEncoder
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    import aekit
    from aekit import anomaly

    train, held_out = normal_split(splits.train.images, splits.train.labels, c)
    x_test, y_test = splits.test.images, splits.test.labels.numpy()
    is_anomaly = y_test != c
    run = aekit.load(WEIGHTS / dataset / str(c))
    t0 = time.perf_counter()
    scores = anomaly.score(run, x_test)
    score_seconds = time.perf_counter() - t0
    calibration_scores = anomaly.score(run, held_out)
    threshold = float(np.quantile(calibration_scores, 1 - FPR, method="higher"))
    flat = lambda x: x.reshape(len(x), -1).numpy().astype(np.float32) / 255  # noqa: E731
    pca = PCA(COMPONENTS, random_state=SEED).fit(flat(train))
    pca_scores = ((pca.inverse_transform(pca.transform(flat(x_test))) - flat(x_test)) ** 2).mean(1)
    torch.manual_seed(SEED)
    pyod = AutoEncoder(random_state=SEED, verbose=0, contamination=FPR).fit(flat(train))
    pyod_scores = pyod.decision_function(flat(x_test))
    row = {"dataset": dataset, "class": c, "normal_train": len(train), "normal_held_out": len(held_out),
           "aekit_auroc": float(roc_auc_score(is_anomaly, scores)),
           "pyod_autoencoder_auroc": float(roc_auc_score(is_anomaly, pyod_scores)),
           "pca_auroc": float(roc_auc_score(is_anomaly, pca_scores)),
           "threshold": threshold, "test_fpr": float((scores[~is_anomaly] > threshold).mean()),
           "test_tpr": float((scores[is_anomaly] > threshold).mean()),
           "score_10000_seconds": score_seconds * 10_000 / len(x_test)}
    log(f"  {dataset}/{c}: aekit {row['aekit_auroc']:.3f}, PyOD AE {row['pyod_autoencoder_auroc']:.3f}, "
        f"PCA {row['pca_auroc']:.3f}; test FPR {row['test_fpr']:.3f}")
    return row


def markdown(result: dict) -> str:
    lines = [SECTION, "", f"Ruff et al. (2018)'s one-class protocol ({result['date']}, {result['machine']}; one run, "
             "the baselines fitted in it): train on one class, score the whole test set, AUROC with that class "
             "as normal. `python bench/anomaly.py --evaluate-only` re-checks it from `bench/weights/anomaly/`.", ""]
    for dataset in DATASETS:
        rows = [r for r in result["rows"] if r["dataset"] == dataset]
        if not rows:
            continue
        lines += [f"| {dataset} class | aekit AUROC | PyOD AutoEncoder | PCA-{COMPONENTS} | test FPR at 5% |",
                  "|---|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['class']} | {r['aekit_auroc']:.3f} | {r['pyod_autoencoder_auroc']:.3f} | "
                         f"{r['pca_auroc']:.3f} | {r['test_fpr']:.3f} |")
        mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
        lines += [f"| mean | {mean('aekit_auroc'):.3f} | {mean('pyod_autoencoder_auroc'):.3f} | "
                  f"{mean('pca_auroc'):.3f} | {mean('test_fpr'):.3f} |", ""]
    seconds = [r["score_10000_seconds"] for r in result["rows"]]
    lines.append(f"Scoring 10,000 images takes {sum(seconds) / len(seconds):.2f} s on average (2 cores).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--only", default=None, help="a dataset, or dataset/class")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import torch

    import aekit
    from aekit.cpu import tune_cpu

    tune_cpu()
    log = lambda message: print(message, flush=True)  # noqa: E731
    wanted = [(d, c) for d in DATASETS for c in range(10)
              if args.only is None or args.only in (d, f"{d}/{c}")]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              "torch": torch.__version__, "options": {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in OPTIONS.items()}, "rows": []}
    for dataset in sorted({d for d, _ in wanted}):
        splits = aekit.load_dataset(dataset, data_dir=args.data_dir, progress=False)
        for d, c in wanted:
            if d != dataset:
                continue
            if not args.evaluate_only and not (WEIGHTS / dataset / str(c) / "model.safetensors").exists():
                train_aekit(dataset, c, *normal_split(splits.train.images, splits.train.labels, c), log)
            if (WEIGHTS / dataset / str(c) / "model.safetensors").exists():
                result["rows"].append(evaluate_class(dataset, c, splits, log))
    print(markdown(result))
    if not args.no_write and args.only is None:
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        faces.write_section(markdown(result), SECTION)


if __name__ == "__main__":
    main()
