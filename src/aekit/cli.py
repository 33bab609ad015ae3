"""Command-line interface: argument parsing only; each verb calls one library function.

Errors a user can cause are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .core.config import ARCHS, FAMILIES
from .errors import AekitError, Interrupted, ReportedElsewhere

EXAMPLES = """examples:
  aekit train --model vae --epochs 10                 # VAE on the embedded 5k MNIST digits
  aekit train --model dae --arch conv --data mnist    # full MNIST (downloaded once, checksum-verified)
  aekit train --model sae --data photos/ --channels 3 --image-size 32,32
  aekit sample runs/vae-mlp-mnist-5k-1 -n 64 -o samples.png
  aekit denoise runs/dae-conv-mnist-1 mnist --noise-std 0.5 --limit 32 -o denoised/
  aekit report runs/vae-mlp-mnist-5k-1                # metrics + figures in runs/.../report.html
  aekit serve --pretrained mnist-vae --data mnist-5k  # explore the latent space at http://127.0.0.1:8000/
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse would print the whole usage)
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _size(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W or one size, got {text!r}")
    return values  # type: ignore[return-value]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aekit",
        description="Train and use image autoencoders: AE, denoising AE, sparse AE, VAE.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"aekit {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True

    t = verbs.add_parser("train", help="train a model and save a run folder")
    t.add_argument("--model", choices=FAMILIES, default=None, help="autoencoder family (default vae)")
    t.add_argument("--arch", choices=ARCHS, default=None, help="backbone (default mlp)")
    t.add_argument("--data", default=None,
                   help="mnist-5k (embedded), mnist, fashion-mnist, an image folder or a .npy/.npz file (default mnist-5k)")
    t.add_argument("--data-dir", default=None, help="root of named datasets (default $AEKIT_DATA or the user cache)")
    t.add_argument("--channels", type=int, default=None,
                   help="convert images to 1 (gray) or 3 (RGB) channels (default: as stored; folders: gray if all gray)")
    t.add_argument("--image-size", type=_size, default=None, metavar="H,W",
                   help="resize images to H,W (or one size for square); default: as stored")
    t.add_argument("--test-split", type=_fraction, default=None, help="held-out fraction where the data has no test split (default 0.1)")
    t.add_argument("--binarize", choices=("none", "static", "dynamic"), default=None,
                   help="Bernoulli-sample the pixels: dynamic = afresh for each training batch, one fixed seeded "
                        "sample of the test set (how MNIST likelihoods are reported); static = one fixed sample "
                        "of each set (default none)")
    t.add_argument("--latent-dim", type=int, default=None, help="latent size (default 32)")
    t.add_argument("--hidden", type=_int_list, default=None, metavar="W1,W2",
                   help="MLP layer widths (default 512,256) or conv channel widths (default 32,64,128)")
    t.add_argument("--activation", default=None, choices=("relu", "leaky_relu", "elu", "gelu", "tanh"),
                   help="hidden-layer nonlinearity (default relu)")
    t.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=None,
                   help="decoder likelihood (default bernoulli: BCE on logits)")
    t.add_argument("--gaussian-std", type=float, default=None, help="std of the gaussian likelihood (default 0.1)")
    t.add_argument("--beta", type=float, default=None, help="KL weight of a VAE (default 1)")
    t.add_argument("--importance-samples", type=int, default=None, metavar="K",
                   help="train a VAE on the importance-weighted (IWAE) bound with K samples per image (default 1: "
                        "the ELBO); tighter and better likelihoods, about K times the decoder's cost")
    t.add_argument("--noise-std", type=float, default=None,
                   help="Gaussian input corruption (default 0.5 for dae, else 0)")
    t.add_argument("--noise-std-min", type=float, default=None, metavar="STD",
                   help="blind denoising: each image's noise std uniform in [STD, --noise-std] instead of fixed")
    t.add_argument("--mask-prob", type=float, default=None, help="masking corruption: fraction of pixels zeroed")
    t.add_argument("--salt-pepper", type=float, default=None, help="salt-and-pepper corruption: fraction of pixels")
    t.add_argument("--sparsity", choices=("none", "l1", "kl"), default=None, help="sparsity penalty (default kl for sae)")
    t.add_argument("--sparsity-weight", type=float, default=None, help="weight of the sparsity penalty (default 10 for sae, else 1)")
    t.add_argument("--sparsity-target", type=float, default=None, help="target activation rho for kl sparsity (default 0.05)")
    t.add_argument("--code-scale", type=float, default=None,
                   help="the decoder reads code x this (default 1; an SAE with kl sparsity: 1/rho, so its input is O(1))")
    t.add_argument("--epochs", type=int, default=None, help="passes over the training images (default 10)")
    t.add_argument("--batch-size", type=int, default=None,
                   help="images per optimisation step (default 128); under torchrun the global batch: each of N "
                        "processes takes batch-size / N, so it must be a multiple of N")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                   help="constant (default), or cosine: the learning rate falls from --lr to 0 over the run's steps")
    t.add_argument("--init-from", default=None, metavar="RUN_DIR",
                   help="start from the weights of this run folder (same model settings) instead of a fresh "
                        "initialisation: fine-tuning, e.g. on another objective or dataset")
    t.add_argument("--weight-decay", type=float, default=None, help="Adam L2 weight decay (default 0)")
    t.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default 0: off)")
    t.add_argument("--compile", choices=("auto", "on", "off"), default=None,
                   help="torch.compile the loss; auto (default) compiles runs long enough to repay its ~40 s cost "
                        "(never MLPs that take the fast step)")
    t.add_argument("--fast-step", choices=("auto", "off"), default=None,
                   help="auto (default): MLPs train by a hand-written forward and backward pass with the same "
                        "gradients as autograd, about 1.3x faster; off: autograd")
    t.add_argument("--seed", type=int, default=None,
                   help="seeds initialisation, shuffling, noise and held-out splits: same seed, same run (default 0)")
    t.add_argument("--out", default=None, metavar="RUN_DIR", help="run folder (default a new runs/<model>-<arch>-<data>-<n>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--force", action="store_true", help="replace a run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    t.add_argument("--report", action="store_true", help="evaluate the run and write RUN/report.html at the end")
    t.add_argument("--stream", action="store_true",
                   help="read a .npy file or an image folder batch by batch instead of holding it in memory "
                        "(default: only when it would take more than half of the available memory)")
    t.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes decoding a streamed image folder ahead of training (default: the cores, 1 to 4)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="train on the CPU or a GPU (default auto: this process's GPU when there is one); "
                        "under torchrun: gloo on CPUs, nccl on GPUs")

    e = verbs.add_parser("encode", help="save the codes of images (posterior means for a VAE)")
    _run_and_input(e)
    e.add_argument("-o", "--output", required=True, help="codes.npy (N, D) or codes.npz (codes + labels)")

    r = verbs.add_parser("reconstruct", help="reconstruct images")
    _run_and_input(r)
    r.add_argument("-o", "--output", required=True, help="a folder (PNGs + grid.png) or a .npy file")

    d = verbs.add_parser("denoise", help="add Gaussian noise to images and denoise them")
    _run_and_input(d)
    d.add_argument("--noise-std", type=float, default=None, help="noise std (default: the run's training noise, else 0.5)")
    d.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    d.add_argument("-o", "--output", required=True, help="a folder (clean|noisy|denoised PNGs + grid.png) or a .npy file")

    s = verbs.add_parser("sample", help="generate new images")
    s.add_argument("run", metavar="RUN", help="a run folder")
    s.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    s.add_argument("-o", "--output", required=True, help="samples.png (a grid) or samples.npy")

    i = verbs.add_parser("info", help="describe a run")
    i.add_argument("run", metavar="RUN", help="a run folder")

    x = verbs.add_parser("export", help="export a run to ONNX: encoder.onnx, decoder.onnx, preprocessing.json")
    x.add_argument("run", metavar="RUN", help="a run folder")
    x.add_argument("--onnx", required=True, metavar="DIR", help="folder for the ONNX files (created if missing)")

    v = verbs.add_parser("serve", help="explore the latent space in the browser (a local web app)")
    v.add_argument("run", metavar="RUN", help="a run folder")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    v.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    v.add_argument("--data", default=None, help="map this dataset's test split instead of the run's")
    v.add_argument("--data-dir", default=None, help="root of named datasets (default: the run's)")
    v.add_argument("--limit", type=int, default=None, metavar="N",
                   help="map only the first N test images (default all, at most 10,000)")

    _measure_parsers(verbs)
    _accept_pretrained(verbs)  # keep last: every verb with a RUN also takes --pretrained NAME
    return parser


def _measure_parsers(verbs: argparse._SubParsersAction) -> None:
    """evaluate, report, compare: they write into run folders, so they take RUN folders only (no --pretrained)."""
    ev = verbs.add_parser("evaluate", help="measure a run on its test split; writes RUN/metrics.json")
    rp = verbs.add_parser("report", help="write RUN/report.html: metrics, figures, config in one file")
    for p in (ev, rp):
        p.add_argument("run_dir", metavar="RUN", help="a run folder")
        p.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's")
        p.add_argument("--data-dir", default=None, help="root of named datasets (default: the run's)")
        p.add_argument("--iw-samples", type=int, default=None, metavar="K",
                       help="importance samples per image for a VAE's IW-NLL (default 1000)")
        p.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N test images")
        p.add_argument("--seed", type=int, default=None, help="seed of noise, samples and subsamples (default 0)")
        p.add_argument("--quiet", action="store_true", help="no progress lines")
    c = verbs.add_parser("compare", help="metrics of several runs side by side (evaluates runs that lack them)")
    c.add_argument("run_dirs", metavar="RUN", nargs="+", help="run folders")
    c.add_argument("-o", "--output", default=None, metavar="TABLE.md",
                   help="also write the table as Markdown and JSON (TABLE.md and TABLE.json)")
    c.add_argument("--iw-samples", type=int, default=None, metavar="K", help="for runs evaluated now (default 1000)")
    c.add_argument("--limit", type=int, default=None, metavar="N", help="for runs evaluated now")
    c.add_argument("--quiet", action="store_true", help="no progress lines")


def _measure(args: argparse.Namespace) -> None:
    log = None if args.quiet else _err
    if args.verb == "evaluate":
        from .evaluate import IW_SAMPLES, evaluate_run, format_table

        metrics = evaluate_run(
            args.run_dir, data=args.data, data_dir=args.data_dir, limit=args.limit, seed=args.seed or 0,
            iw_samples=IW_SAMPLES if args.iw_samples is None else args.iw_samples, progress=not args.quiet, log=log,
        )
        if not _is_main():  # under torchrun, rank 0 speaks
            return
        print(format_table(metrics))
        print(f"metrics: {Path(args.run_dir) / 'metrics.json'}")
    elif args.verb == "report":
        from .report.html import report

        path = report(args.run_dir, data=args.data, data_dir=args.data_dir, iw_samples=args.iw_samples,
                      limit=args.limit, seed=args.seed, progress=not args.quiet, log=log)
        print(f"report: {path}")
    else:
        from .report.compare import compare, to_markdown, write_comparison

        table = compare(args.run_dirs, iw_samples=args.iw_samples, limit=args.limit, progress=not args.quiet, log=log)
        print(to_markdown(table), end="")
        if args.output:
            written = write_comparison(table, args.output)
            print(f"written: {', '.join(map(str, written))}")


def _run_and_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("input", metavar="INPUT", help="a dataset name (its test split), an image, a folder or a .npy/.npz file")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--data-dir", default=None, help="root of named datasets (default: the run's, else $AEKIT_DATA)")


def _accept_pretrained(verbs: argparse._SubParsersAction) -> None:
    """Give every verb with a RUN positional a ``--pretrained NAME`` alternative; RUN becomes optional.

    Give RUN and INPUT side by side (``RUN INPUT --limit 5``): once RUN is optional, argparse cannot
    split them around options. :func:`_load_model` checks that exactly one of the two was given.
    """
    from .pretrained import available

    for p in verbs.choices.values():
        for action in p._actions:
            if action.dest == "run" and not action.option_strings:
                action.nargs, action.required, action.default = "?", False, None
                action.help = (action.help or "a run folder") + " (or give --pretrained NAME instead)"
                p.add_argument("--pretrained", metavar="NAME", default=None,
                               help=f"a model shipped with aekit instead of RUN: {', '.join(available())}")


def _load_model(args: argparse.Namespace):
    """The model a verb works on: the run folder RUN, or the shipped model ``--pretrained NAME``."""
    run, name = getattr(args, "run", None), getattr(args, "pretrained", None)
    if run is not None and name is not None:
        raise AekitError(f"give a run folder or --pretrained {name}, not both")
    if name is not None:
        from .pretrained import load as load_pretrained

        return load_pretrained(name)
    if run is None:
        raise AekitError(f"{args.verb} needs a run folder (RUN) or --pretrained NAME")
    from .run import load

    return load(run)


def _train(args: argparse.Namespace) -> None:
    from .training.loop import train

    options = {
        name: getattr(args, name)
        for name in (
            "arch", "data", "data_dir", "channels", "image_size", "test_split", "binarize", "latent_dim", "hidden",
            "activation", "likelihood", "gaussian_std", "beta", "importance_samples", "noise_std", "noise_std_min", "mask_prob", "salt_pepper",
            "sparsity", "sparsity_weight", "sparsity_target", "code_scale", "epochs", "batch_size", "lr", "weight_decay", "seed",
            "grad_clip", "compile", "fast_step", "lr_schedule", "init_from",
        )
    }
    model = train(args.model, out=args.out, resume=args.resume, force=args.force,
                  progress=not args.quiet, log=None if args.quiet else _err, stream=args.stream or None,
                  workers=args.workers, device=args.device, **options)
    if not _is_main():  # under torchrun, rank 0 speaks and writes
        return
    print(f"run folder: {model.run_dir}")
    if args.report:
        from .report.html import report

        print(f"report: {report(model.run_dir, progress=not args.quiet, log=None if args.quiet else _err)}")


DISTRIBUTED_VERBS = ("train", "evaluate")


def _check_processes(args: argparse.Namespace) -> None:
    """Under torchrun only train and evaluate (without --report) have work to share out."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) == 1:
        return
    if args.verb not in DISTRIBUTED_VERBS or getattr(args, "report", False):
        what = "train --report" if args.verb == "train" else args.verb
        message = (f"aekit {what} runs in one process, not under torchrun: only train and evaluate use several "
                   f"processes (then run aekit report on the run)")
        raise AekitError(message) if _is_main() else ReportedElsewhere(message)


def _is_main() -> bool:
    """Rank 0 of a torchrun job, or a process on its own (RANK unset)."""
    return os.environ.get("RANK", "0") == "0"


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_result(result: dict) -> None:
    for key, value in result.items():
        print(f"{key:18s}{value:.4g}" if isinstance(value, float) else f"{key:18s}{value}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"aekit: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning  # one line, no source excerpt
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed as one line
        return int(exit_.code or 0)
    try:
        _check_processes(args)
        if args.verb == "train":
            _train(args)
            return 0
        if args.verb in ("evaluate", "report", "compare"):
            _measure(args)
            return 0
        from . import tasks

        model = _load_model(args)
        if args.verb == "info":
            print(tasks.describe(model))
        elif args.verb == "encode":
            _print_result(tasks.encode(model, args.input, args.output, limit=args.limit, data_dir=args.data_dir))
        elif args.verb == "reconstruct":
            _print_result(tasks.reconstruct(model, args.input, args.output, limit=args.limit, data_dir=args.data_dir))
        elif args.verb == "denoise":
            noise = args.noise_std if args.noise_std is not None else (model.run_config.objective.noise_std or 0.5)
            _print_result(tasks.denoise(model, args.input, args.output, noise_std=noise, seed=args.seed,
                                        limit=args.limit, data_dir=args.data_dir))
        elif args.verb == "sample":
            _print_result(tasks.sample(model, args.output, n=args.n, seed=args.seed))
        elif args.verb == "export":
            from .export import export_onnx

            _print_result(export_onnx(model, args.onnx))
        elif args.verb == "serve":
            from .serve import serve

            serve(model, host=args.host, port=args.port, data=args.data, data_dir=args.data_dir, limit=args.limit,
                  log=_err)
        return 0
    except Interrupted as err:
        if not isinstance(err, ReportedElsewhere) and _is_main():
            print(f"aekit: {err}", file=sys.stderr)
        return 130
    except AekitError as err:
        if not isinstance(err, ReportedElsewhere):  # under torchrun: the process that failed says why
            print(f"aekit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aekit: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("aekit: error: out of memory (try a smaller --batch-size or image size)", file=sys.stderr)
        return 2
