"""Does a mixture of logistics (``--likelihood logistic-mixture``) lower a face VAE's bits/dim? Measured side by side.

    python bench/mixture.py                  # train both arms (resumable; about 15 minutes on two cores), evaluate
    python bench/mixture.py --evaluate-only  # re-check the numbers from the committed weights (no training)

Two short runs of ``bench/faces.py``'s spatial VAE (``--downsample 4 --latent-channels 8``, free bits, KL warm-up,
Adam 1e-3 with a cosine schedule, seed 0), on the same 13,496 training faces of its seeded split, for EPOCHS
epochs each; they differ only in the likelihood: ``logistic-rgb`` (one coupled logistic per pixel) against
``logistic-mixture`` (five). Both are scored as ``bench/faces.py`` scores its VAEs: importance-weighted bits per
dimension (K = 100) and the negative ELBO on its first 500 test faces, with PNG and lossless WebP on the same
faces in the same run. Nothing was chosen by the test faces (the number of components is PixelCNN++'s order of
magnitude, fixed before the run). The runs are short: the comparison is between the arms, not with the faces
table's 16-epoch model.

Writes ``bench/results/mixture.json`` and its section of ``docs/results.md``; the weights are kept in
``bench/weights/mixture/`` (half precision).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import faces  # noqa: E402  (bench/ is not a package): the face split, the VAE's command and the lossless codecs
import runs  # noqa: E402

WEIGHTS = HERE / "weights" / "mixture"
SCRATCH = HERE / "results" / "tmp" / "mixture"
RESULTS_JSON = HERE / "results" / "mixture.json"
SECTION = "## Faces: one logistic or a mixture of five"
EPOCHS = 4
OPTIONS = ("--downsample", "4", "--latent-channels", "8", "--free-bits", "0.05", "--kl-warmup", "2000")
ARMS = tuple(faces.Spec(f"vae-spatial-{short}", OPTIONS, EPOCHS, "", model="vae", likelihood=likelihood)
             for short, likelihood in (("rgb", "logistic-rgb"), ("mixture", "logistic-mixture")))


def main() -> None:
    parser = runs.parser(__doc__, only="only the arm whose name ends with this (rgb or mixture)")
    args = parser.parse_args()
    log = runs.start()
    import numpy as np
    import torch

    import aekit
    from aekit.metrics.likelihood import variational_metrics

    arms = [a for a in ARMS if args.only is None or a.name.endswith(args.only)]
    data = faces.face_cache(Path(args.data_dir))
    for arm in arms:
        if not args.evaluate_only and runs.unfinished(arm, WEIGHTS):
            runs.train(arm, data, log, SCRATCH, WEIGHTS)
    if args.train_only:
        return
    test = torch.from_numpy(np.load(data)["x_test"][: faces.IW_FACES])
    rows = []
    for arm in ARMS:
        if not (WEIGHTS / arm.name / "model.safetensors").exists():
            raise SystemExit(f"mixture.py: no weights for {arm.name} in {WEIGHTS}: train it first (without "
                             "--evaluate-only)")
        run = aekit.load(WEIGHTS / arm.name)
        run.model.float()
        curve = [json.loads(line) for line in (WEIGHTS / arm.name / "metrics.jsonl").read_text().splitlines()]
        t0 = time.perf_counter()
        v = variational_metrics(run.model, run.config.objective, test, iw_samples=faces.IW_K, seed=faces.SEED)
        rows.append({"run": arm.name, "likelihood": arm.likelihood, "decoder_outputs": 3 * run.config.model.outputs,
                     "parameters": sum(p.numel() for p in run.model.parameters()),
                     "iw_bits_per_dim": v["iw_nll_bits_per_dim"], "neg_elbo_bits_per_dim": v["neg_elbo_bits_per_dim"],
                     "epochs": len(curve), "train_seconds": round(sum(r["epoch_seconds"] for r in curve), 1),
                     "train_images_per_second": curve[-1]["train_images_per_second"],
                     "evaluate_seconds": round(time.perf_counter() - t0, 1),
                     "command": " ".join(arm.command("FACES64.npz", f"runs/{arm.name}"))})
        log(f"{arm.name}: IW {rows[-1]['iw_bits_per_dim']:.3f} bits/dim, -ELBO {rows[-1]['neg_elbo_bits_per_dim']:.3f}")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}",
              "torch": torch.__version__, "test_faces": len(test), "iw_samples": faces.IW_K,
              "lossless_bits_per_dim": faces.lossless_codecs(test), "rows": rows,
              "mixture_minus_single_bits_per_dim": rows[1]["iw_bits_per_dim"] - rows[0]["iw_bits_per_dim"]}
    print(json.dumps(result, indent=1))
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        runs.write_section(markdown(result), SECTION)


def markdown(result: dict) -> str:
    """The docs section: the two arms side by side, the lossless codecs beside them."""
    rgb, mixture = result["rows"]
    lossless = result["lossless_bits_per_dim"]
    lines = [SECTION, "",
             f"Two spatial face VAEs (`bench/faces.py`'s vae-spatial options) trained for {rgb['epochs']} epochs each "
             "on the same training faces, seed and schedule, differing only in the likelihood; importance-weighted "
             f"bits per dimension (K = {result['iw_samples']}) on the first {result['test_faces']} test faces, with "
             f"PNG and lossless WebP on the same faces, in one run ({result['date']}, {result['machine']}). "
             "`python bench/mixture.py --evaluate-only` re-checks it from `bench/weights/mixture/`.", "",
             "| likelihood | decoder outputs | parameters | IW bits/dim | -ELBO bits/dim | evaluation s |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| `{r['likelihood']}` | {r['decoder_outputs']} | {r['parameters']:,} | {r['iw_bits_per_dim']:.3f} | "
              f"{r['neg_elbo_bits_per_dim']:.3f} | {r['evaluate_seconds']:.0f} |" for r in (rgb, mixture)]
    gain = result["mixture_minus_single_bits_per_dim"]
    lines += ["", f"PNG {lossless['png']:.2f} bits/dim, lossless WebP {lossless['webp']:.2f} on the same faces. The "
              f"mixture of five changes the bits/dim by {gain:+.3f} ({100 * gain / rgb['iw_bits_per_dim']:+.1f}%), for "
              f"{mixture['decoder_outputs'] // rgb['decoder_outputs']}x the decoder's output channels and "
              f"{mixture['evaluate_seconds'] / rgb['evaluate_seconds']:.1f}x the evaluation time (the two arms "
              "were trained at different times on a shared machine: their training times are not compared). "
              "The faces table keeps `logistic-rgb`; whether the gap widens with longer training is not measured."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
