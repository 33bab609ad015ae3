"""Training and evaluation speed of aekit against the PyTorch reference pipeline and pythae.

    python bench/speed.py                      # everything, on ../shared/data/mnist; ~15 min on 2 cores
    python bench/speed.py --quick              # fewer epochs and no 600k point, for a smoke run
    python bench/speed.py --data-dir DIR       # where mnist/ lives
    python bench/speed.py --photos             # only the residual backbone on 64x64 faces (bench/photo_speed.py)

Each measurement runs in its own subprocess (so peak memory is its own) and prints one JSON line;
the parent prints a table and writes ``bench/results/speed.json``. Ratios are computed from
measurements taken in this one run, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import photo_speed  # noqa: E402  (bench/ is not a package)

RESULTS = HERE / "results"

# pytorch/examples vae/main.py: Linear layers (in, out); the mean and log-variance heads are two 400->20 layers
REFERENCE_LAYERS = [(784, 400), (400, 20), (400, 20), (20, 400), (400, 784)]


def train_flops_per_image(layers: list[tuple[int, int]], first_layers: int = 1) -> int:
    """Multiply-add FLOPs of one training step per image: forward 2*in*out, weight grad 2*in*out,
    input grad 2*in*out except for the layers that read the data (their input needs no gradient)."""
    total = 0
    for i, (n_in, n_out) in enumerate(layers):
        total += (4 if i < first_layers else 6) * n_in * n_out
    return total


def conv_flops_per_image(model) -> int:
    """Training FLOPs per image of any aekit model, counted from its Linear/Conv layers with a forward hook."""
    import torch
    from torch import nn

    macs = {"first": 0, "rest": 0}
    first = {"seen": False}

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            m = module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            m = k * output.shape[1] * output.shape[2] * output.shape[3]
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            m = k * inputs[0].shape[1] * inputs[0].shape[2] * inputs[0].shape[3]
        else:
            return
        macs["rest" if first["seen"] else "first"] += m
        first["seen"] = True

    handles = [mod.register_forward_hook(hook) for mod in model.modules()]
    with torch.no_grad():
        x = torch.rand(1, *model.config.image_shape)
        model.decode(model.encode(x).mode())
    for h in handles:
        h.remove()
    return 4 * macs["first"] + 6 * macs["rest"]


# ----------------------------------------------------------------------------- child measurements


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_mnist(data_dir: str, repeat: int = 1, limit: int | None = None):
    import torch

    import aekit

    splits = aekit.load_dataset("mnist", data_dir=data_dir, progress=False)
    train = splits.train
    if limit is not None:
        train = train.subset(torch.arange(limit))
    if repeat > 1:
        train = aekit.ImageSet(train.images.repeat(repeat, 1, 1, 1), train.labels.repeat(repeat), train.name + f"x{repeat}")
    return aekit.Splits(train, splits.test)


def child_matmul(args) -> dict:
    """GFLOP/s of the reference model's own matmuls (forward, input and weight grads), batch 128."""
    import torch

    torch.manual_seed(0)
    b = 128
    ops = []
    for i, (n_in, n_out) in enumerate(REFERENCE_LAYERS):
        x, w, dy = torch.randn(b, n_in), torch.randn(n_in, n_out), torch.randn(b, n_out)
        ops.append((x, w))  # forward
        ops.append((x.T.contiguous(), dy))  # weight grad
        if i > 0:
            ops.append((dy, w.T.contiguous()))  # input grad
    flops = sum(2 * a.shape[0] * a.shape[1] * c.shape[1] for a, c in ops)
    for _ in range(50):
        for a, c in ops:
            torch.mm(a, c)
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(200):
            for a, c in ops:
                torch.mm(a, c)
        best = min(best, time.perf_counter() - t0)
    gflops = 200 * flops / best / 1e9
    return {"gflops": gflops, "step_flops_per_image": flops // b, "threads": torch.get_num_threads()}


def child_aekit(args) -> dict:
    import aekit

    splits = _load_mnist(args.data_dir, args.repeat, args.limit)
    kw = dict(hidden=(400,), latent_dim=20) if args.arch == "mlp" else dict(arch="conv")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run = aekit.train("vae", out=Path(out) / "run", epochs=args.epochs, batch_size=128, lr=1e-3,
                          compile=args.compile, fast_step=args.fast_step, splits=splits, progress=False, log=None,
                          **kw)
        model = run.model
        total = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    n = len(splits.train)
    train_seconds = [n / r["train_images_per_second"] for r in rows]
    result = {
        "images": n,
        "epoch_seconds": [r["epoch_seconds"] for r in rows],
        "train_seconds": train_seconds,
        "compiled": rows[-1]["compiled"],
        "fast_step": rows[-1].get("fast_step", False),
        "total_seconds": total,
        "peak_mib": _peak_mib(),
    }
    if args.arch == "mlp":
        result["flops_per_image"] = train_flops_per_image(REFERENCE_LAYERS)
    else:
        result["flops_per_image"] = conv_flops_per_image(model)
    if args.encode:
        import torch

        images = splits.test.images
        model.embed(images[:1000])
        t0 = time.perf_counter()
        model.embed(images)
        result["encode_images_per_second"] = len(images) / (time.perf_counter() - t0)
        iw = _iw_nll_seconds(run, images, args.iw_samples)
        if iw is not None:
            result.update(iw)
        del torch
    return result


def _iw_nll_seconds(run, images, k: int) -> dict | None:
    from aekit.metrics.likelihood import importance_weighted_log_likelihood, log_likelihood_fn

    model = run.model
    log_lik = log_likelihood_fn(run.config.objective)
    t0 = time.perf_counter()
    log_px, _ = importance_weighted_log_likelihood(model.encode, model.decode, log_lik, images, k)
    seconds = time.perf_counter() - t0
    # per image the encoder once and the decoder K times, forward only: 2 FLOPs per multiply-add
    enc = 2 * (784 * 400 + 2 * 400 * 20)
    dec = 2 * (20 * 400 + 400 * 784)
    flops = len(images) * (enc + k * dec)
    return {"iw_nll_seconds": seconds, "iw_nll_nats": float(-log_px.mean()), "iw_k": k, "iw_flops": flops}


def child_reference(args) -> dict:
    sys.path.insert(0, str(HERE))
    from reference import reference_epoch

    splits = _load_mnist(args.data_dir, 1, args.limit)
    if args.arch == "mlp":
        times = reference_epoch(splits.train.images, epochs=args.epochs)
    else:
        times = _reference_conv(splits.train.images, args.epochs)
    return {"images": len(splits.train), "train_seconds": times, "peak_mib": _peak_mib()}


def _reference_conv(images, epochs: int) -> list[float]:
    """The reference pipeline (per-item Dataset + DataLoader, plain Adam) around aekit's conv VAE."""
    import torch
    from reference import PerItemImages
    from torch.utils.data import DataLoader

    import aekit
    from aekit.core.objectives import loss_terms

    torch.manual_seed(0)
    model = aekit.Autoencoder(aekit.ModelConfig(arch="conv", latent="gaussian"))
    cfg = aekit.ObjectiveConfig()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(PerItemImages(images), batch_size=128, shuffle=True)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, _ in loader:
            optimizer.zero_grad()
            loss_terms(model, x, cfg)["loss"].backward()
            optimizer.step()
        times.append(time.perf_counter() - t0)
    return times


def child_pythae(args) -> dict:
    sys.path.insert(0, str(HERE))
    import logging

    logging.disable(logging.INFO)
    from reference import pythae_epoch

    splits = _load_mnist(args.data_dir, 1, args.limit)
    times = pythae_epoch(splits.train.images, epochs=args.epochs)
    return {"images": len(splits.train), "train_seconds": times, "available": times is not None, "peak_mib": _peak_mib()}


CHILDREN = {"matmul": child_matmul, "aekit": child_aekit, "reference": child_reference, "pythae": child_pythae,
            **photo_speed.CHILDREN}


# ----------------------------------------------------------------------------- parent


def measure(kind: str, data_dir: str, **options) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data-dir", data_dir]
    for key, value in options.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    print(f"  running {kind} {options}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def steady(times: list[float]) -> float:
    """Median of the epochs after the first (the first pays compilation and warm-up; the median, because
    this machine is shared: a neighbour's burst slows one epoch, not the typical one)."""
    rest = sorted(times[1:] or times)
    mid = len(rest) // 2
    return rest[mid] if len(rest) % 2 else (rest[mid - 1] + rest[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--fast-step", default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--encode", action="store_true")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "speed.json"))
    parser.add_argument("--photos", action="store_true", help="only the residual backbone (kept in --out's 'photos')")
    parser.add_argument("--faces", type=int, default=2000, help="training faces the photo measurements use")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    photo_epochs = 2 if args.quick else 3
    if args.photos:
        out = Path(args.out)
        r = json.loads(out.read_text()) if out.exists() else {"machine": _machine()}
        r["photos"] = photo_speed.measure_photos(measure, args.data_dir, args.faces, photo_epochs)
        r["photos"]["machine"] = _machine()
        r["photos"]["summary"] = photo_speed.summarise(r["photos"], steady)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2) + "\n")
        photo_speed.print_table(r["photos"]["summary"])
        return

    epochs = 2 if args.quick else 4
    d = args.data_dir
    r: dict = {"machine": _machine()}
    r["matmul"] = measure("matmul", d)
    r["reference"] = measure("reference", d, epochs=epochs)
    r["pythae"] = measure("pythae", d, epochs=epochs)
    r["aekit_default"] = measure("aekit", d, epochs=epochs, encode=True)  # what `aekit train` does: the fast step
    r["aekit_autograd"] = measure("aekit", d, epochs=epochs, compile="off", fast_step="off")
    r["aekit_compiled"] = measure("aekit", d, epochs=epochs + 1, compile="on")  # autograd, torch.compile'd loss
    r["aekit_5k_auto"] = measure("aekit", d, epochs=1, compile="auto", limit=5000)
    r["aekit_5k_off"] = measure("aekit", d, epochs=1, compile="off", limit=5000)
    r["scaling"] = {}
    for label, kw in [("5k", {"limit": 5000}), ("60k", {}), ("600k", {"repeat": 10})]:
        if args.quick and label == "600k":
            continue
        r["scaling"][label] = measure("aekit", d, epochs=1, **kw)
    conv_epochs = 1 if args.quick else 3
    r["conv_aekit"] = measure("aekit", d, arch="conv", epochs=conv_epochs, compile="off")
    r["conv_reference"] = measure("reference", d, arch="conv", epochs=conv_epochs)
    r["photos"] = photo_speed.measure_photos(measure, d, args.faces, photo_epochs)
    r["photos"]["summary"] = photo_speed.summarise(r["photos"], steady)
    summary = _summarise(r)
    r["summary"] = summary
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
    _print_table(summary)
    photo_speed.print_table(r["photos"]["summary"])
    print(f"\nwrote {os.path.relpath(args.out)}")


def _machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}


def _summarise(r: dict) -> dict:
    s: dict = {}
    gflops = r["matmul"].get("gflops")
    s["matmul_gflops"] = gflops
    ref = r["reference"].get("train_seconds")
    py = r["pythae"].get("train_seconds")
    default = r["aekit_default"].get("train_seconds")
    autograd = r["aekit_autograd"].get("train_seconds")
    comp = r["aekit_compiled"].get("train_seconds")
    s["reference_epoch_s"] = steady(ref) if ref else None
    s["pythae_epoch_s"] = steady(py) if py else None
    s["aekit_default_epoch_s"] = steady(default) if default else None
    s["aekit_default_fast_step"] = r["aekit_default"].get("fast_step")
    s["aekit_autograd_epoch_s"] = steady(autograd) if autograd else None
    s["aekit_compiled_first_epoch_s"] = comp[0] if comp else None
    s["aekit_compiled_epoch_s"] = steady(comp) if comp else None
    ours = s["aekit_default_epoch_s"]  # the ratios are the default's: what a user gets with no flags
    if ours:
        s["aekit_images_per_second"] = 60000 / ours
        if s["reference_epoch_s"]:
            s["speedup_vs_reference"] = s["reference_epoch_s"] / ours
        if s["pythae_epoch_s"]:
            s["speedup_vs_pythae"] = s["pythae_epoch_s"] / ours
    flops = r["aekit_default"].get("flops_per_image")
    if gflops and flops and ours:
        s["train_fraction_of_matmul"] = flops * 60000 / ours / 1e9 / gflops
        s["matmul_limit_epoch_s"] = flops * 60000 / 1e9 / gflops
    e = r["aekit_default"]
    s["encode_images_per_second"] = e.get("encode_images_per_second")
    if "iw_nll_seconds" in e:
        s["iw_nll_k1000_seconds"] = e["iw_nll_seconds"]
        if gflops:
            s["iw_nll_fraction_of_matmul"] = e["iw_flops"] / e["iw_nll_seconds"] / 1e9 / gflops
    s["peak_mib_60k"] = r["scaling"].get("60k", {}).get("peak_mib")
    s["short_run_auto_s"] = r["aekit_5k_auto"].get("total_seconds")
    s["short_run_off_s"] = r["aekit_5k_off"].get("total_seconds")
    s["scaling"] = {
        k: {"seconds_per_image_us": 1e6 * v["train_seconds"][0] / v["images"], "peak_mib": v["peak_mib"]}
        for k, v in r["scaling"].items() if "train_seconds" in v
    }
    ca, cr = r["conv_aekit"].get("train_seconds"), r["conv_reference"].get("train_seconds")
    s["conv_aekit_epoch_s"] = steady(ca) if ca else None
    s["conv_reference_epoch_s"] = steady(cr) if cr else None
    if ca and cr:
        s["conv_speedup_vs_reference"] = steady(cr) / steady(ca)
    if gflops and r["conv_aekit"].get("flops_per_image") and ca:
        s["conv_gflops_achieved"] = r["conv_aekit"]["flops_per_image"] * 60000 / steady(ca) / 1e9
    return s


def _print_table(s: dict) -> None:
    def f(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    print("\nReference VAE (MLP 784-400-20, batch 128) on 60,000 MNIST images, one run:")
    print(f"  matrix-multiply rate (model's shapes)   {f(s['matmul_gflops'], '.1f')} GFLOP/s"
          f"  -> limit {f(s.get('matmul_limit_epoch_s'))} s/epoch")
    print(f"  reference DataLoader pipeline           {f(s['reference_epoch_s'])} s/epoch")
    print(f"  pythae VAE + BaseTrainer                {f(s['pythae_epoch_s'])} s/epoch")
    print(f"  aekit, default (fast step: {s['aekit_default_fast_step']})        {f(s['aekit_default_epoch_s'])} s/epoch")
    print(f"  aekit, autograd (--fast-step off)       {f(s['aekit_autograd_epoch_s'])} s/epoch")
    print(f"  aekit, autograd compiled (first epoch)  {f(s['aekit_compiled_epoch_s'])} s/epoch "
          f"({f(s['aekit_compiled_first_epoch_s'])} s)")
    print(f"  speed-up vs reference / vs pythae       {f(s.get('speedup_vs_reference'))}x / {f(s.get('speedup_vs_pythae'))}x")
    print(f"  training step, fraction of matmul rate  {f(s.get('train_fraction_of_matmul'), '.0%')}")
    print(f"  encode                                  {f(s['encode_images_per_second'], ',.0f')} images/s")
    print(f"  IW-NLL K=1000 on 10,000 test images     {f(s.get('iw_nll_k1000_seconds'))} s "
          f"({f(s.get('iw_nll_fraction_of_matmul'), '.0%')} of matmul rate)")
    print(f"  peak memory, 60k run                    {f(s['peak_mib_60k'], '.0f')} MiB")
    print(f"  1 epoch on 5k images: compile auto/off  {f(s['short_run_auto_s'])} s / {f(s['short_run_off_s'])} s")
    for k, v in s["scaling"].items():
        print(f"  scaling {k:>5}: {v['seconds_per_image_us']:.1f} us/image, peak {v['peak_mib']:.0f} MiB")
    print(f"  conv VAE (default): aekit {f(s['conv_aekit_epoch_s'])} s/epoch, reference {f(s['conv_reference_epoch_s'])}"
          f" s/epoch ({f(s.get('conv_speedup_vs_reference'))}x)")


if __name__ == "__main__":
    main()
