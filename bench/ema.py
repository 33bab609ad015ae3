"""Does a moving average of the weights (``--ema``) help a photo autoencoder? Measured on natural images.

    python bench/ema.py                  # train once (about 10 minutes on one core), write the JSON
    python bench/ema.py --evaluate-only  # re-check the final PSNRs from the committed weights

One training run, so the comparison is free of seed and order effects: the residual autoencoder
(``--arch resnet --latent-dim 64``, gaussian likelihood, batch 32, Adam 1e-3 with a cosine schedule) on 3,500
CIFAR-10 images (32x32 RGB, the 4,000-record sample in ``../shared/data/cifar10-sample/``, a seed-0 split; the
other 500 are the test images), with ``--ema 0.999``. After every epoch both the weights being trained and their
moving average reconstruct the 500 test images: PSNR (RGB, per image, averaged) of each. Nothing was chosen by
these test images (the decay is the common default, fixed before the run).

Writes ``bench/results/ema.json``; both final weight sets are kept in ``bench/weights/ema/`` (half precision).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import runs  # noqa: E402  (bench/ is not a package)

WEIGHTS = HERE / "weights" / "ema"
RESULTS_JSON = HERE / "results" / "ema.json"
RECORD, N_TEST, SEED, EPOCHS, DECAY = 3073, 500, 0, 6, 0.999
OPTIONS = dict(arch="resnet", latent_dim=64, likelihood="gaussian", batch_size=32, lr=1e-3, lr_schedule="cosine",
               seed=SEED, ema=DECAY, data="cifar10")  # data: the provenance the run records (its images come in splits)


def cifar_sample(data_dir: Path):
    """The sample's images as uint8 (N, 3, 32, 32): train and test (a seed-0 permutation, the last N_TEST)."""
    import numpy as np
    import torch

    raw = np.fromfile(data_dir / "cifar10-sample" / "data_batch_1.first4000.bin", dtype=np.uint8)
    images = torch.from_numpy(raw.reshape(-1, RECORD)[:, 1:].reshape(-1, 3, 32, 32).copy())
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED))
    return images[perm[:-N_TEST]], images[perm[-N_TEST:]]


def psnr(model, test) -> float:
    from aekit.metrics.pixels import mean_psnr

    clean = test.float() / 255
    return mean_psnr(model.reconstruct(test), clean)


def main() -> None:
    args = runs.parser(__doc__, train=False).parse_args()
    log = runs.start()
    import torch

    import aekit
    from aekit.training.loop import Callback

    train, test = cifar_sample(Path(args.data_dir))
    if args.evaluate_only:
        result = json.loads(RESULTS_JSON.read_text())
        for arm in ("trained", "average"):
            value = psnr(aekit.load(WEIGHTS / arm).model.float(), test)
            log(f"{arm}: {value:.3f} dB (recorded {result['final'][arm]:.3f})")
        return

    rows = []

    class BothArms(Callback):
        def on_epoch_end(self, state, row):
            rows.append({"epoch": row["epoch"], "step": row["step"], "trained_psnr_db": psnr(state.model, test),
                         "average_psnr_db": psnr(state.ema, test)})
            state.model.train()
            log(f"epoch {row['epoch']}: trained {rows[-1]['trained_psnr_db']:.2f} dB, "
                f"average {rows[-1]['average_psnr_db']:.2f} dB")

    splits = aekit.Splits(aekit.ImageSet(train, None, "cifar/train"), aekit.ImageSet(test, None, "cifar/test"))
    t0 = time.perf_counter()
    with __import__("tempfile").TemporaryDirectory() as tmp:
        run = aekit.train("ae", out=Path(tmp) / "run", epochs=EPOCHS, splits=splits, callbacks=[BothArms()],
                          progress=False, log=log, **OPTIONS)
        trained = aekit.load(Path(tmp) / "run")
        from aekit.files import read_safetensors

        state, _ = read_safetensors(Path(tmp) / "run" / "state.safetensors")
        trained.model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    seconds = time.perf_counter() - t0
    final = {"trained": psnr(trained.model, test), "average": psnr(run.model, test)}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              "threads": torch.get_num_threads(), "options": OPTIONS, "epochs": EPOCHS, "train_images": len(train),
              "test_images": len(test), "seconds": round(seconds, 1), "curve": rows, "final": final}
    print(json.dumps(result, indent=1))
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        for arm, r in (("trained", trained), ("average", run)):
            dataclasses.replace(r, history=run.history).save(WEIGHTS / arm, dtype=torch.float16)


if __name__ == "__main__":
    main()
