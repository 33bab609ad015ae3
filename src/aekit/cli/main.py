"""The ``aekit`` command: the verbs' parsers and what each calls; argument parsing only, the work is the
library's. Errors a user can cause are printed as one line on stderr with exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..console import survive_closed_streams
from ..core.config import FAMILIES
from ..cpu import tune_cpu
from ..errors import AekitError, Interrupted, ReportedElsewhere
from .values import LIMIT, SEED, Parser, add_option_flags, bounded, size

SCORE_CHOICES = ("mse", "nll", "elbo", "iwae", "latent")  # aekit.anomaly.SCORES, without importing torch to parse

EXAMPLES = """examples:
  aekit train --model vae --epochs 10                 # VAE on the embedded 5k MNIST digits
  aekit train --model dae --arch conv --data mnist    # full MNIST (downloaded once, checksum-verified)
  aekit train --model sae --data photos/ --channels 3 --image-size 32,32
  aekit sample runs/vae-mlp-mnist-5k-1 -n 64 -o samples.png
  aekit denoise runs/dae-conv-mnist-1 mnist --noise-std 0.5 --limit 32 -o denoised/
  aekit report runs/vae-mlp-mnist-5k-1                # metrics + figures in runs/.../report.html
  aekit serve --pretrained mnist-vae --data mnist-5k  # explore the latent space at http://127.0.0.1:8000/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="aekit",
        description="Train and use image autoencoders: AE, denoising AE, sparse AE, VAE.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"aekit {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    verbs.required = True

    t = verbs.add_parser("train", help="train a model and save a run folder")
    t.add_argument("--model", choices=FAMILIES, default=None, help="autoencoder family (default vae)")
    t.add_argument("--out", default=None, metavar="RUN_DIR", help="run folder (default a new runs/<model>-<arch>-<data>-<n>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--force", action="store_true", help="replace a run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    t.add_argument("--report", action="store_true", help="evaluate the run and write RUN/report.html at the end")
    t.add_argument("--stream", action="store_true",
                   help="read a .npy file or an image folder batch by batch instead of holding it in memory "
                        "(default: only when it would take more than half of the available memory)")
    t.add_argument("--workers", type=bounded("--workers", int, "[0, 64]"), default=None, metavar="N",
                   help="processes decoding a streamed image folder ahead of training (default: the cores, 1 to 4)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="train on the CPU or a GPU (default auto: this process's GPU when there is one); "
                        "under torchrun: gloo on CPUs, nccl on GPUs")
    add_option_flags(t)

    e = verbs.add_parser("encode", help="save the codes of images (posterior means for a VAE)")
    _run_and_input(e)
    e.add_argument("-o", "--output", required=True, help="codes.npy (N, D) or codes.npz (codes + labels)")

    r = verbs.add_parser("reconstruct", help="reconstruct images")
    _run_and_input(r)
    r.add_argument("-o", "--output", required=True, help="a folder (PNGs + grid.png) or a .npy file; a photo model: "
                   "also out.png for one image file")

    d = verbs.add_parser("denoise", help="denoise images (noisy ones, or clean ones made noisy by --noise-std)")
    _run_and_input(d)
    d.add_argument("--noise-std", type=bounded("--noise-std", float, "[0, 2]"), default=None,
                   help="a demonstration: add Gaussian noise of this std (in [0, 2], pixels in [0, 1]) first and "
                        "measure PSNRs; without it the images are taken as noisy and their noise std is estimated")
    d.add_argument("--noise-level", type=bounded("--noise-level", float, "[0, 2]"), default=None,
                   help="for a model trained with --noise-level-input: the noise std to tell it (default: the added "
                        "noise's, else the estimated one)")
    d.add_argument("--self-ensemble", action="store_true",
                   help="a photo model: denoise each image in its 8 rotations and mirror images and average them, "
                        "turned back (8 times slower; about +0.25 dB)")
    d.add_argument("--seed", type=SEED, default=0, help="seed of the noise (default 0)")
    d.add_argument("-o", "--output", required=True, help="a folder (clean|noisy|denoised PNGs + grid.png) or a .npy file; "
                   "a photo model: also out.png for one image file")

    cp = verbs.add_parser("compress", help="compress images to .aek files (a run trained with --latent entropy)")
    _run_and_input(cp)
    cp.add_argument("-o", "--output", required=True, help="image.aek (one image) or a folder (one .aek per image)")
    cp.add_argument("--refine", type=bounded("--refine", int, "[0, 10000]"), default=0, metavar="STEPS",
                    help="optimize each image's code for that image in STEPS gradient steps before coding it: a "
                         "lower rate-distortion loss, decoded as any file; about 0.45 s per step and megapixel on 2 "
                         "cores (default 0: the encoder's code)")

    dp = verbs.add_parser("decompress", help="decode .aek files to PNGs with the run that wrote them")
    dp.add_argument("run", metavar="RUN", help="a run folder")
    dp.add_argument("input", metavar="INPUT", help="an .aek file or a folder of them")
    dp.add_argument("-o", "--output", required=True, help="image.png (one file) or a folder")

    sc = verbs.add_parser("score", help="anomaly scores (higher = less like the training images), and decisions "
                                        "once the run is calibrated")
    _run_and_input(sc)
    sc.add_argument("--score", default=None, choices=SCORE_CHOICES,
                    help="mse (default of ae, dae, sae), nll, elbo (default of vae), iwae, latent (see aekit.anomaly)")
    sc.add_argument("--decide", action="store_true", help="require decisions (a calibrated run): an error without")
    sc.add_argument("--maps", default=None, metavar="DIR", help="also write, per image, image | reconstruction | "
                    "per-pixel error (one colour scale for all) as DIR/<index>.png")
    sc.add_argument("-o", "--output", required=True, help="scores.csv (index, label, score, anomaly) or scores.npy")

    cb = verbs.add_parser("calibrate", help="store the threshold that flags a fraction --fpr of normal images")
    _run_and_input(cb)
    cb.add_argument("--fpr", type=bounded("--fpr", float, "(0, 1)"), default=0.05,
                    help="false-positive rate on normal images, in (0, 1) (default 0.05)")
    cb.add_argument("--score", default=None, choices=SCORE_CHOICES, help="as aekit score (default: the family's)")

    s = verbs.add_parser("sample", help="generate new images")
    s.add_argument("run", metavar="RUN", help="a run folder")
    s.add_argument("-n", type=bounded("-n", int, "[1, inf)"), default=64,
                   help="number of samples (default 64; a PNG grid holds at most 1,024)")
    s.add_argument("--seed", type=SEED, default=0, help="seed of the draws (default 0)")
    s.add_argument("--size", type=size, default=None, metavar="H,W",
                   help="images of this size (a model with a spatial latent; default the training size)")
    s.add_argument("--source", choices=("prior", "codes"), default=None,
                   help="prior: N(0, I), a VAE's default; codes: a Gaussian fitted to the training codes, a plain "
                        "autoencoder's only source (a VAE's is fitted now, on its run's training images)")
    s.add_argument("--components", type=bounded("--components", int, "[1, inf)"), default=None, metavar="K",
                   help="draw from a mixture of K Gaussians fitted now to the training codes (a VAE's posterior "
                        "means) instead of one: it follows codes in clusters, where one Gaussian draws between them")
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
    v.add_argument("--port", type=bounded("--port", int, "[0, 65535]"), default=8000,
                   help="port to listen on (default 8000; 0 picks a free one)")
    v.add_argument("--data", default=None, help="map this dataset's test split instead of the run's")
    v.add_argument("--data-dir", default=None, help="root of named datasets (default: the run's)")
    v.add_argument("--limit", type=LIMIT, default=None, metavar="N",
                   help="map only the first N test images (default all, at most 10,000)")

    _measure_parsers(verbs)
    _accept_pretrained(verbs)  # keep last: every verb with a RUN also takes --pretrained NAME
    return parser


def _measure_parsers(verbs: argparse._SubParsersAction) -> None:
    """evaluate, report, compare: they write what they measure (into the run folder, or -o)."""
    iw_samples = bounded("--iw-samples", int, "[1, inf)")
    ev = verbs.add_parser("evaluate", help="measure a run on its test split; writes RUN/metrics.json (or -o)")
    ev.add_argument("-o", "--output", default=None, metavar="METRICS.json",
                    help="write the metrics here instead of RUN/metrics.json (a shipped model's only go here)")
    rp = verbs.add_parser("report", help="write RUN/report.html: metrics, figures, config in one file (or in -o)")
    rp.add_argument("-o", "--output", default=None, metavar="DIR",
                    help="write report.html, figures/ and metrics.json in DIR instead of the run folder")
    for p in (ev, rp):
        p.add_argument("run", metavar="RUN", help="a run folder")
        p.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's")
        p.add_argument("--data-dir", default=None, help="root of named datasets (default: the run's)")
        p.add_argument("--iw-samples", type=iw_samples, default=None, metavar="K",
                       help="importance samples per image for a VAE's IW-NLL (default 1000)")
        p.add_argument("--limit", type=LIMIT, default=None, metavar="N", help="use only the first N test images")
        p.add_argument("--seed", type=SEED, default=None, help="seed of noise, samples and subsamples (default 0)")
        p.add_argument("--quiet", action="store_true", help="no progress lines")
    c = verbs.add_parser("compare", help="metrics of several runs side by side (evaluates runs that lack them)")
    c.add_argument("run_dirs", metavar="RUN", nargs="+", help="run folders")
    c.add_argument("-o", "--output", default=None, metavar="TABLE.md",
                   help="also write the table as Markdown and JSON (TABLE.md and TABLE.json)")
    c.add_argument("--iw-samples", type=iw_samples, default=None, metavar="K",
                   help="for runs evaluated now (default 1000)")
    c.add_argument("--limit", type=LIMIT, default=None, metavar="N", help="for runs evaluated now")
    c.add_argument("--quiet", action="store_true", help="no progress lines")


def _measure(args: argparse.Namespace) -> None:
    log = None if args.quiet else _err
    if args.verb in ("evaluate", "report"):
        source = _source(args)
        options = dict(data=args.data, data_dir=args.data_dir, limit=args.limit, progress=not args.quiet, log=log)
    if args.verb == "evaluate":
        from ..evaluation import IW_SAMPLES, evaluate_run
        from ..report.tables import format_table

        iw = IW_SAMPLES if args.iw_samples is None else args.iw_samples
        evaluate_run(source, output=args.output, seed=args.seed or 0, iw_samples=iw,
                     show=lambda metrics: print(format_table(metrics), flush=True), **options)
        if _is_main():  # under torchrun, rank 0 speaks
            written = args.output or (Path(args.run) / "metrics.json" if args.run else None)
            print(f"metrics: {written}" if written else "metrics: not written (pass -o FILE.json to keep them)")
    elif args.verb == "report":
        from ..report.html import report

        path = report(source, output=args.output, iw_samples=args.iw_samples, seed=args.seed, **options)
        print(f"report: {path}")
    else:
        from ..report.compare import check_output, compare, to_markdown, write_comparison

        if args.output:
            check_output(args.output)  # before evaluating anything
        table = compare(args.run_dirs, iw_samples=args.iw_samples, limit=args.limit, progress=not args.quiet, log=log)
        print(to_markdown(table), end="")  # with a note under it when the runs' settings differ
        if args.output:
            written = write_comparison(table, args.output)
            print(f"written: {', '.join(map(str, written))}")


def _run_and_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("input", metavar="INPUT", help="a dataset name (its test split), an image, a folder or a .npy/.npz file")
    p.add_argument("--limit", type=LIMIT, default=None, help="use only the first N images")
    p.add_argument("--data-dir", default=None, help="root of named datasets (default: the run's, else $AEKIT_DATA)")


def _accept_pretrained(verbs: argparse._SubParsersAction) -> None:
    """Give every verb with a RUN positional a ``--pretrained NAME`` alternative; RUN becomes optional.

    Give RUN and INPUT side by side (``RUN INPUT --limit 5``): once RUN is optional, argparse cannot
    split them around options. :func:`_load_run` checks that exactly one of the two was given.
    """
    from ..pretrained import available

    for p in verbs.choices.values():
        for action in p._actions:
            if action.dest == "run" and not action.option_strings:
                action.nargs, action.required, action.default = "?", False, None
                action.help = (action.help or "a run folder") + " (or give --pretrained NAME instead)"
                p.add_argument("--pretrained", metavar="NAME", default=None,
                               help=f"a model shipped with aekit instead of RUN: {', '.join(available())}")


def _source(args: argparse.Namespace):
    """What a verb works on: the run folder RUN (a path), or the shipped model ``--pretrained NAME`` (a Run)."""
    run, name = getattr(args, "run", None), getattr(args, "pretrained", None)
    if run is not None and name is not None:
        raise AekitError(f"give a run folder or --pretrained {name}, not both")
    if name is not None:
        from ..pretrained import load as load_pretrained

        return load_pretrained(name)
    if run is None:
        raise AekitError(f"{args.verb} needs a run folder (RUN) or --pretrained NAME")
    return run


def _load_run(args: argparse.Namespace):
    """The run a verb works on, loaded: the run folder RUN, or the shipped model ``--pretrained NAME``."""
    from ..run import Run

    source = _source(args)
    return source if isinstance(source, Run) else Run.load(source)


def _train(args: argparse.Namespace) -> None:
    from ..api import train
    from ..core.config import options

    config_options = {opt.name: getattr(args, opt.name) for opt in options()}
    run = train(args.model, out=args.out, resume=args.resume, force=args.force,
                progress=not args.quiet, log=None if args.quiet else _err, stream=args.stream or None,
                workers=args.workers, device=args.device, **config_options)
    if not _is_main():  # under torchrun, rank 0 speaks and writes
        return
    print(f"run folder: {run.path}")
    if args.report:
        from ..report.html import report

        print(f"report: {report(run.path, progress=not args.quiet, log=None if args.quiet else _err)}")


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
        print(f"{key:17s} {value:.4g}" if isinstance(value, float) else f"{key:17s} {value}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"aekit: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    with survive_closed_streams():  # a closed reader (| head) silences the output, never stops the work
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    import warnings

    warnings.showwarning = _show_warning  # one line, no source excerpt
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed as one line
        return int(exit_.code or 0)
    try:
        tune_cpu()  # the whole process: flush-to-zero in every thread, the allocator's thresholds (aekit.cpu)
        _check_processes(args)
        if args.verb == "train":
            _train(args)
            return 0
        if args.verb in ("evaluate", "report", "compare"):
            _measure(args)
            return 0
        from .. import tasks

        run = _load_run(args)
        if args.verb == "info":
            print(run.describe())
        elif args.verb == "encode":
            _print_result(tasks.encode(run, args.input, args.output, limit=args.limit, data_dir=args.data_dir))
        elif args.verb == "reconstruct":
            _print_result(tasks.reconstruct(run, args.input, args.output, limit=args.limit, data_dir=args.data_dir))
        elif args.verb == "denoise":
            _print_result(tasks.denoise(run, args.input, args.output, noise_std=args.noise_std, seed=args.seed,
                                        limit=args.limit, data_dir=args.data_dir, noise_level=args.noise_level,
                                        self_ensemble=args.self_ensemble))
        elif args.verb == "compress":
            from ..codec import compress_files

            _print_result(compress_files(run, args.input, args.output, limit=args.limit, data_dir=args.data_dir,
                                         refine=args.refine))
        elif args.verb == "decompress":
            from ..codec import decompress_files

            _print_result(decompress_files(run, args.input, args.output))
        elif args.verb == "score":
            from ..anomaly import score_files

            _print_result(score_files(run, args.input, args.output, kind=args.score, need_decisions=args.decide,
                                      limit=args.limit, data_dir=args.data_dir, maps=args.maps))
        elif args.verb == "calibrate":
            from ..anomaly import calibrate_files

            _print_result(calibrate_files(run, args.input, fpr=args.fpr, kind=args.score, limit=args.limit,
                                          data_dir=args.data_dir))
        elif args.verb == "sample":
            _print_result(tasks.sample(run, args.output, n=args.n, seed=args.seed, size=args.size,
                                       source=args.source, components=args.components))
        elif args.verb == "export":
            from ..export import export_onnx

            _print_result(export_onnx(run, args.onnx))
        elif args.verb == "serve":
            from ..serve import serve

            serve(run, host=args.host, port=args.port, data=args.data, data_dir=args.data_dir, limit=args.limit,
                  log=_err)
        return 0
    except Interrupted as err:
        if _is_main():
            print(f"aekit: {err}", file=sys.stderr)
        return 130
    except ReportedElsewhere:  # under torchrun, another rank failed: that one says why and sets the job's status;
        return 0  # this one leaves quietly, as a failed exit here could make torchrun stop that rank before it spoke
    except AekitError as err:
        print(f"aekit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aekit: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("aekit: error: out of memory (try a smaller --batch-size, image size or request)", file=sys.stderr)
        return 2
    except RuntimeError as err:  # PyTorch's allocator raises RuntimeError, not MemoryError
        if "can't allocate memory" not in str(err) and "out of memory" not in str(err).lower():
            raise
        print("aekit: error: out of memory (try a smaller --batch-size, image size or request; see "
              "AEKIT_MEMORY_BUDGET)", file=sys.stderr)
        return 2
