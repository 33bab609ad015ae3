"""Speed of the residual backbone on 64x64 RGB faces: aekit against a plain PyTorch loop over the same network.

    python bench/speed.py --photos           # this part of bench/speed.py alone (about 5 minutes on 2 cores)

Measured in one run, each in its own subprocess (peak memory is its own):

* the machine's conv rate: GFLOP/s of 3x3 convolutions at the backbone's stage shapes, forward and both backward
  passes (the best of them);
* ``aekit train`` (the default step: uint8 batches gathered in memory, fused Adam) on the first ``--faces``
  training faces of ``bench/faces.py``'s split, with the face benchmark's spatial model (4 x 8 x 8 code):
  training and encoding images/s, the achieved GFLOP/s (the model's conv and linear FLOPs per image counted by
  forward hooks, x3 for a training step) and the peak memory;
* the plain loop: the same network and loss, a ``DataLoader`` over a ``TensorDataset`` of float images, shuffled,
  batch 32, ``torch.optim.Adam`` with its defaults: what a user writes from the PyTorch tutorials.

The epoch time for the 15,000 faces is extrapolated from the measured throughput (said so in the output).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FACES = 15_000
MODEL = {"arch": "resnet", "latent_channels": 4, "likelihood": "gaussian"}  # bench/faces.py's ae-spatial
BATCH = 32


def _faces(data_dir: str, n: int):
    sys.path.insert(0, str(HERE))
    import numpy as np
    import torch
    from faces import face_cache

    arrays = np.load(face_cache(Path(data_dir)))
    return torch.from_numpy(arrays["x_train"][:n]), torch.from_numpy(arrays["x_test"][:500])


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_conv_rate(args) -> dict:
    """GFLOP/s of 3x3 convolutions at the backbone's three stage shapes (48 channels at 32x32, 96 at 16x16, 192 at
    8x8; batch 32), forward, input grad and weight grad as a training step runs them: the best of the three."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    rates = {}
    for channels, side in ((48, 32), (96, 16), (192, 8)):
        x = torch.randn(BATCH, channels, side, side, requires_grad=True)
        w = torch.randn(channels, channels, 3, 3, requires_grad=True)
        flops = 3 * 2 * BATCH * channels * channels * 9 * side * side

        def step():
            y = F.conv2d(x, w, padding=1)
            y.backward(torch.ones_like(y))

        for _ in range(5):
            step()
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(20):
                step()
            best = min(best, (time.perf_counter() - t0) / 20)
        rates[f"{channels}@{side}"] = flops / best / 1e9
    return {"gflops": max(rates.values()), "by_shape": rates, "threads": torch.get_num_threads()}


def child_photo_aekit(args) -> dict:
    import tempfile

    from speed import conv_flops_per_image

    import aekit

    train, test = _faces(args.data_dir, args.faces)
    splits = aekit.Splits(aekit.ImageSet(train, None, "faces/train"), aekit.ImageSet(test, None, "faces/test"))
    with tempfile.TemporaryDirectory() as out:
        run = aekit.train("ae", out=Path(out) / "run", epochs=args.epochs, batch_size=BATCH, lr=1e-3, compile="off",
                          splits=splits, progress=False, log=None, **MODEL)
        rows = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    model = run.model
    model.embed(test[:64])
    t0 = time.perf_counter()
    model.embed(test)
    encode = len(test) / (time.perf_counter() - t0)
    return {"images": len(train), "train_seconds": [len(train) / r["train_images_per_second"] for r in rows],
            "encode_images_per_second": encode, "flops_per_image": conv_flops_per_image(model),
            "parameters": sum(p.numel() for p in model.parameters()), "peak_mib": _peak_mib()}


def child_photo_plain(args) -> dict:
    """The plain loop a user writes: DataLoader over float images, the same network, MSE, default Adam."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import aekit
    from aekit.core.config import preset

    train, _ = _faces(args.data_dir, args.faces)
    config = preset("ae", **MODEL).model
    config = type(config)(**{**config.__dict__, "channels": 3, "height": 64, "width": 64})
    torch.manual_seed(0)
    model = aekit.Autoencoder(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(train.float() / 255), batch_size=BATCH, shuffle=True)
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for (x,) in loader:
            optimizer.zero_grad()
            recon = torch.sigmoid(model.decode(model.encode(x).mode(), size=x.shape[-2:]))
            torch.nn.functional.mse_loss(recon, x, reduction="sum").div(len(x)).backward()
            optimizer.step()
        times.append(time.perf_counter() - t0)
    return {"images": len(train), "train_seconds": times, "peak_mib": _peak_mib()}


CHILDREN = {"conv_rate": child_conv_rate, "photo_aekit": child_photo_aekit, "photo_plain": child_photo_plain}


def measure_photos(measure, data_dir: str, faces: int, epochs: int) -> dict:
    """The three measurements, aekit and the plain loop alternating so that a neighbour's burst hits both."""
    r = {"conv_rate": measure("conv_rate", data_dir)}
    r["photo_aekit"] = measure("photo_aekit", data_dir, faces=faces, epochs=epochs)
    r["photo_plain"] = measure("photo_plain", data_dir, faces=faces, epochs=epochs)
    return r


def summarise(r: dict, steady) -> dict:
    a, p = r["photo_aekit"], r["photo_plain"]
    s: dict = {"conv_gflops": r["conv_rate"].get("gflops")}
    if "train_seconds" not in a or "train_seconds" not in p:
        return {**s, "error": a.get("error") or p.get("error")}
    ours, plain = steady(a["train_seconds"]), steady(p["train_seconds"])
    s.update({
        "images": a["images"], "train_images_per_second": a["images"] / ours,
        "plain_train_images_per_second": p["images"] / plain, "speedup_vs_plain": plain / ours,
        "encode_images_per_second": a["encode_images_per_second"],
        "train_gflops_achieved": a["flops_per_image"] * a["images"] / ours / 1e9,
        "train_flops_per_image": a["flops_per_image"], "parameters": a["parameters"],
        "epoch_seconds_15k_faces_extrapolated": FACES * ours / a["images"],
        "peak_mib": a["peak_mib"], "plain_peak_mib": p["peak_mib"],
    })
    if s["conv_gflops"]:
        s["fraction_of_conv_rate"] = s["train_gflops_achieved"] / s["conv_gflops"]
    return s


def print_table(s: dict) -> None:
    if "error" in s:
        print(f"\nResidual backbone: failed ({s['error']})")
        return
    print(f"\nResidual backbone (ae-spatial of bench/faces.py, {s['parameters']:,} weights) on "
          f"{s['images']:,} 64x64 RGB faces, batch {BATCH}, one run:")
    print(f"  conv rate (3x3, stage shapes, fwd+bwd)   {s['conv_gflops']:.1f} GFLOP/s")
    print(f"  aekit train                             {s['train_images_per_second']:.1f} images/s, "
          f"{s['train_gflops_achieved']:.1f} GFLOP/s ({s.get('fraction_of_conv_rate', 0):.0%} of the conv rate)")
    print(f"  plain PyTorch loop, same network        {s['plain_train_images_per_second']:.1f} images/s "
          f"(aekit {s['speedup_vs_plain']:.2f}x)")
    print(f"  aekit encode                            {s['encode_images_per_second']:.0f} images/s")
    print(f"  an epoch of 15,000 faces (extrapolated) {s['epoch_seconds_15k_faces_extrapolated'] / 60:.1f} min, "
          f"peak {s['peak_mib']:.0f} MiB (plain loop {s['plain_peak_mib']:.0f} MiB)")
