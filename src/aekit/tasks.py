"""What the CLI verbs do with a trained model, as library functions.

Each takes a loaded model, an INPUT spec (dataset name, image file, folder or array
file) and an output path; an output ending in ``.npy`` gets an array of images in
[0, 1] (N, C, H, W, input order) instead of PNGs.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from .core.objectives import corrupt
from .core.options import Interval, check_value
from .data import ImageSet, load_images
from .data.load import input_kind, iter_photos
from .data.machine import check_memory
from .errors import AekitError
from .files import atomic_write_bytes, check_writable, make_folder, output_stem
from .imaging import grid, rows, save_npy, save_png
from .metrics.pixels import estimate_noise_std, mean_psnr
from .run import Run

GRID_MAX = 64  # images in the grid.png of reconstruct
NOISE_STD = Interval.parse("[0, 2]")  # the noise std aekit trains with: pixels are in [0, 1]
SAMPLE_COUNT = Interval.parse("[1, inf)")
SAMPLE_GRID_MAX = 1024  # samples a PNG grid holds (about 60 MB of pixels at 28x28, more for larger images)


def load_inputs(
    run: Run, spec: str, *, limit: int | None = None, data_dir: str | None = None, progress: bool = False
) -> ImageSet:
    """Load INPUT and conform it to the model's channels and size (named datasets: from ``data_dir``,
    else the run's data folder, else the default)."""
    c, h, w = run.model.config.image_shape
    if data_dir is None:
        data_dir = run.config.data.data_dir
    images = load_images(spec, data_dir=data_dir, channels=c, image_size=(h, w), progress=progress)
    if limit is not None:
        if limit < 1:
            raise AekitError(f"--limit must be >= 1 (got {limit})")
        images = images.subset(torch.arange(min(limit, len(images))))
    if len(images) == 0:
        raise AekitError(f"{spec} holds no images")
    return images


def _check_output(out: Path, *, arrays: tuple[str, ...] = (".npy",), folder: bool = True) -> None:
    """Refuse an output that cannot be written, before any work: a file ending in one of ``arrays``, or (with
    ``folder``) a folder of PNGs."""
    if out.suffix in arrays:
        check_writable(out)
        return
    if not folder or out.suffix:
        kinds = " or ".join(arrays)
        raise AekitError(f"-o {out}: give " + (f"a folder (for PNGs) or a name ending in {kinds} (for an array)"
                                                if folder else f"a name ending in {kinds}"))
    if out.exists() and not out.is_dir():
        raise AekitError(f"-o {out} exists and is not a folder (end the name in .npy to write an array)")
    check_writable(out, folder=True)


def _check_photo_output(run: Run, spec: str, out: Path) -> None:
    """What a photo model's reconstruct or denoise may write: a folder, a .npy array, or (``-o NAME.png``) the one
    image of an INPUT that is one image file, at its size and in its mode."""
    if run.model.config.spatial and out.suffix == ".png":
        if input_kind(spec) != "image":
            raise AekitError(f"-o {out} names one image, and {spec} is not one image file: give a folder for its PNGs")
        check_writable(out)
        return
    _check_output(out)


def _budget(verb: str, images: int, copies: int, run: Run, out: Path) -> None:
    """Check ``copies`` float32 copies of ``images`` of the model's shape against the memory budget, and the
    free disk against what ``out`` will hold (an array of them, or about a byte a pixel of PNGs)."""
    pixels = images * math.prod(run.model.config.image_shape)
    check_memory(f"{verb} {images:,} images", copies * pixels * 4)
    check_writable(out, folder=out.suffix == "", nbytes=pixels * (4 if out.suffix == ".npy" else 1))


def encode(run: Run, spec: str, out: str | Path, *, limit: int | None = None,
           data_dir: str | None = None) -> dict:
    """Save the codes (posterior means) of INPUT as an (N, D) float32 array (.npy) or codes + labels (.npz)."""
    out = Path(out)
    _check_output(out, arrays=(".npy", ".npz"), folder=False)
    if run.model.config.spatial:
        return _encode_photos(run, spec, out, limit=limit, data_dir=data_dir)
    model, images = run.model, load_inputs(run, spec, limit=limit, data_dir=data_dir)
    check_memory(f"encoding {len(images):,} images", 4 * len(images) * (math.prod(model.config.image_shape)
                                                                        + model.config.code_size))
    codes = model.embed(images.images)
    if out.suffix == ".npy":
        save_npy(codes, out)
    else:
        arrays = {"codes": codes.numpy()}
        if images.labels is not None:
            arrays["labels"] = images.labels.numpy()
        _save_npz(out, arrays)
    return {"images": len(images), "latent_shape": "x".join(map(str, codes.shape[1:])), "output": str(out)}


def _encode_photos(run: Run, spec: str, out: Path, *, limit: int | None, data_dir: str | None) -> dict:
    """A spatial model's codes of each image at its own size: (N, C, h, w) in a .npy when the sizes agree, else a
    .npz with one array per image, named after its file."""
    model, codes, names = run.model, [], []
    for i, (name, image) in enumerate(iter_photos(spec, channels=model.config.channels,
                                                  data_dir=data_dir or run.config.data.data_dir)):
        if limit is not None and i >= limit:
            break
        check_memory(f"encoding a {image.shape[-1]}x{image.shape[-2]} image", 6 * 4 * image.numel())
        codes.append(model.embed(image))
        names.append(name)
    if not codes:
        raise AekitError(f"{spec} holds no images")
    shapes = {tuple(c.shape[1:]) for c in codes}
    if out.suffix == ".npy" or len(shapes) == 1:
        if len(shapes) > 1:
            raise AekitError(f"-o {out}: the images differ in size, so their codes cannot share an array; give a "
                             "name ending in .npz (one array per image)")
        save_npy(torch.cat(codes), out) if out.suffix == ".npy" else _save_npz(out, {"codes": torch.cat(codes).numpy()})
    else:
        _save_npz(out, {name: code[0].numpy() for name, code in zip(names, codes)})
    return {"images": len(codes), "latent_shape": ", ".join(sorted("x".join(map(str, s)) for s in shapes)),
            "output": str(out)}


def _save_npz(out: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(out, buffer.getvalue())


def reconstruct(run: Run, spec: str, out: str | Path, *, limit: int | None = None,
                data_dir: str | None = None) -> dict:
    """Reconstruct INPUT: one PNG per image plus ``grid.png`` (inputs over reconstructions), or a .npy array."""
    out = Path(out)
    _check_photo_output(run, spec, out)
    if run.model.config.spatial:
        return _photos(run, spec, out, limit=limit, data_dir=data_dir)
    model, images = run.model, load_inputs(run, spec, limit=limit, data_dir=data_dir)
    _budget("reconstructing", len(images), 3, run, out)
    clean = model.prepare(images.images)
    recon = model.reconstruct(images.images)
    if out.suffix == ".npy":
        save_npy(recon, out)
    else:
        make_folder(out)
        for i, image in enumerate(recon):
            save_png(image, out / f"{i:05d}.png")
        k = min(len(recon), GRID_MAX // 2)
        save_png(_paired_rows(clean[:k], recon[:k]), out / "grid.png", scale=2)
    mse = float((clean - recon).pow(2).mean())
    return {"images": len(recon), "mse_per_pixel": mse, "psnr_db": mean_psnr(clean, recon), "output": str(out)}


def _in_its_mode(model, image: torch.Tensor, noise_level: float | None = None,
                 self_ensemble: bool = False) -> torch.Tensor:
    """``model.reconstruct`` of one image (1, c, H, W) in its own mode: a colour photo through a grey model plane
    by plane, a grey photo through a colour model as R = G = B and back to grey (the channels' mean). A model
    told the noise level is told ``noise_level``."""
    c, model_c = image.shape[1], model.config.channels
    options = {"noise_level": noise_level, "self_ensemble": self_ensemble}
    if c == model_c:
        return model.reconstruct(image, **options)
    if model_c == 1:  # (1, 3, H, W) -> (3, 1, H, W) and back
        return model.reconstruct(image.transpose(0, 1), **options).transpose(0, 1)
    return model.reconstruct(image.expand(-1, model_c, -1, -1), **options).mean(1, keepdim=True)


def _photos(run: Run, spec: str, out: Path, *, noise_std: float | None = None, seed: int = 0,
            limit: int | None = None, data_dir: str | None = None, denoising: bool = False,
            noise_level: float | None = None, self_ensemble: bool = False) -> dict:
    """A spatial model's reconstruct (or denoise: with ``noise_std`` of images it makes noisy, else of images taken
    as noisy already): every image at its own size, one at a time (a large one in tiles), each written as a PNG
    named after it (with ``noise_std``, its noisy version beside it), all stacked in a .npy when they share a size,
    or, for one image file and ``-o NAME.png``, the result alone in that file. A model told the noise level is told
    ``noise_level``, else the added noise's std, else each image's estimated one (recorded as ``noise_level``)."""
    model, c = run.model, run.model.config.channels
    results, arrays = [], []
    names: set[str] = set()
    generator = torch.Generator().manual_seed(seed)
    photos = iter_photos(spec, channels=c, data_dir=data_dir or run.config.data.data_dir, own_mode=denoising)
    for i, (name, image) in enumerate(photos):
        if limit is not None and i >= limit:
            break
        check_memory(f"{'denoising' if denoising else 'reconstructing'} a {image.shape[-1]}x"
                     f"{image.shape[-2]} image", 6 * 4 * max(c, image.shape[1]) * image[0, 0].numel())
        clean = image.float() / 255  # (1, C, H, W) uint8 -> [0, 1]
        if noise_std is None:
            row = ({"estimated_noise_std": float(estimate_noise_std(clean)[0])} if denoising else {})
            level = _level(model, noise_level, row.get("estimated_noise_std"), row)
            shown = _in_its_mode(model, image, level, self_ensemble)
            if not denoising:
                row["psnr_db"] = mean_psnr(clean, shown)
        else:
            noisy = corrupt(clean, noise_std=noise_std, generator=generator)
            row = {"psnr_noisy_db": mean_psnr(noisy, clean)}
            shown = _in_its_mode(model, noisy, _level(model, noise_level, noise_std, row), self_ensemble)
            row["psnr_denoised_db"] = mean_psnr(shown, clean)
        if out.suffix == ".npy":
            if arrays and arrays[0].shape != shown.shape:
                raise AekitError(f"-o {out}: the images differ in size, so they cannot share an array; give a folder")
            arrays.append(shown)
        elif out.suffix == ".png":  # the one image of an image file (checked before): the result alone
            save_png(shown[0], out)
        else:
            make_folder(out)
            stem = output_stem(name, i, names)
            if noise_std is not None:
                save_png(noisy[0], out / f"{stem}-noisy.png")
            save_png(shown[0], out / f"{stem}.png")
        results.append(row)
    if not results:
        raise AekitError(f"{spec} holds no images")
    if arrays:
        save_npy(torch.cat(arrays), out)
    summary = {key: sum(r[key] for r in results) / len(results) for key in results[0]}
    return {"images": len(results), **summary, **({"noise_std": noise_std} if noise_std is not None else {}),
            "output": str(out)}


def _level(model, given: float | None, fallback: float | None, row: dict) -> float | None:
    """The noise std a model told the level is told (``given``, else ``fallback``; None: 0, a clean image),
    recorded in ``row``."""
    if not model.config.noise_level_input:
        return None
    level = given if given is not None else fallback
    if level is not None:
        row["noise_level"] = level
    return level


def denoise(run: Run, spec: str, out: str | Path, *, noise_std: float | None = None, seed: int = 0,
            limit: int | None = None, data_dir: str | None = None, noise_level: float | None = None,
            self_ensemble: bool = False) -> dict:
    """Denoise INPUT. With ``noise_std``, a demonstration: Gaussian noise of that std (seeded, clipped to [0, 1] as
    a saved photo is) is added first, and the PSNRs of the noisy and denoised images are measured; without it the
    images are taken as noisy already, denoised as they are, and each one's noise std is estimated
    (:func:`aekit.metrics.pixels.estimate_noise_std`). A model trained with ``noise_level_input`` is told
    ``noise_level``, else the added noise's std, else the estimate. ``self_ensemble`` (a photo model): each image
    denoised in its 8 rotations and mirror images, turned back and averaged (8 times the work). Writes per image a
    clean | noisy | denoised PNG (input | denoised without ``noise_std``) plus ``grid.png``, a photo model one PNG
    per image named after it, or the denoised images as a .npy array."""
    out = Path(out)
    if noise_std is not None:
        check_value("noise std", noise_std, NOISE_STD)
    if noise_level is not None:
        check_value("noise level", noise_level, NOISE_STD)
        if not run.model.config.noise_level_input:
            raise AekitError("--noise-level: this model is blind (trained without --noise-level-input), it is told "
                             "no level; leave it out")
    _check_photo_output(run, spec, out)
    if run.model.config.spatial:
        return _photos(run, spec, out, noise_std=noise_std, seed=seed, limit=limit, data_dir=data_dir, denoising=True,
                       noise_level=noise_level, self_ensemble=self_ensemble)
    if self_ensemble:
        raise AekitError("--self-ensemble needs a photo model (a spatial latent): a vector code is tied to its "
                         "image's orientation")
    model, images = run.model, load_inputs(run, spec, limit=limit, data_dir=data_dir)
    _budget("denoising", len(images), 4, run, out)
    clean = model.prepare(images.images)
    if noise_std is None:  # already noisy: denoise the images as they are
        denoised = model.reconstruct(images.images)
        if out.suffix == ".npy":
            save_npy(denoised, out)
        else:
            make_folder(out)
            for i in range(len(clean)):
                save_png(grid(torch.stack([clean[i], denoised[i]]), ncol=2, pad=1), out / f"{i:05d}.png")
            k = min(len(clean), GRID_MAX // 2)
            save_png(_paired_rows(clean[:k], denoised[:k]), out / "grid.png", scale=2)
        return {"images": len(clean), "estimated_noise_std": float(estimate_noise_std(clean).mean()),
                "output": str(out)}
    noisy, denoised = model.denoise(images.images, noise_std=noise_std, seed=seed)
    if out.suffix == ".npy":
        save_npy(denoised, out)
    else:
        make_folder(out)
        for i in range(len(clean)):
            save_png(grid(torch.stack([clean[i], noisy[i], denoised[i]]), ncol=3, pad=1), out / f"{i:05d}.png")
        k = min(len(clean), 16)
        save_png(rows(clean[:k], noisy[:k], denoised[:k]), out / "grid.png", scale=2)
    return {
        "images": len(clean),
        "noise_std": noise_std,
        "psnr_noisy_db": mean_psnr(noisy, clean),
        "psnr_denoised_db": mean_psnr(denoised, clean),
        "output": str(out),
    }


def sample(run: Run, out: str | Path, *, n: int = 64, seed: int = 0, size: tuple[int, int] | None = None,
           source: str | None = None, components: int | None = None) -> dict:
    """Draw ``n`` images: from the prior N(0, I) for a VAE, from a Gaussian fitted to the training
    codes for a deterministic autoencoder. Writes a PNG grid or a .npy array. ``size`` (H, W): images of another
    size than the training one, which a spatial latent can make (its prior is the same at every position).
    ``source="codes"`` with a VAE: from a Gaussian fitted now to the posterior means of the run's training
    images (a density fitted after training, Ghosh et al. 2020), instead of the prior. ``components`` K: from a
    mixture of K Gaussians fitted now to the training codes (a VAE's posterior means; :mod:`aekit.core.code_mixture`)
    instead of the one Gaussian; it implies ``source="codes"``."""
    out = Path(out)
    model = run.model
    c, h, w = model.config.image_shape
    check_value("the number of samples", n, SAMPLE_COUNT)
    if components is not None:
        check_value("--components", components, Interval.parse("[1, inf)"))
        if source == "prior":
            raise AekitError("--components fits a mixture to the training codes: it goes with --source codes, "
                             "not the prior")
        if size is not None and tuple(size) != (h, w):
            raise AekitError(f"--components draws whole codes of the training images' size ({h}x{w}); other "
                             "sizes come from the one Gaussian over the channels (no --components)")
        source = "codes"
    if size is not None and tuple(size) != (h, w):
        if not model.config.spatial:
            raise AekitError(f"--size {size[0]},{size[1]}: this model's code is a vector, so it makes {h}x{w} images "
                             "only (a spatial latent, --latent-channels, makes any size)")
        check_value("--size", min(size), Interval.parse("[1, inf)"))
        n_pixels = n * size[0] * size[1]
        check_memory(f"sampling {n:,} images of {size[0]}x{size[1]}", 2 * c * n_pixels * 4)
    _check_output(out, arrays=(".png", ".npy"), folder=False)
    if out.suffix == ".png" and n > SAMPLE_GRID_MAX:
        raise AekitError(f"a PNG grid holds at most {SAMPLE_GRID_MAX:,} samples (asked for {n:,}); write .npy for more")
    _budget("sampling", n, 2, run, out)
    fitted = None
    if source == "codes" and (model.is_variational or components is not None):
        from .evaluation import load_run_splits
        from .training.loop import training_codes

        train = load_run_splits(run, progress=False).train
        codes = training_codes(model, train, seed=run.config.train.seed)
        fitted = len(codes)
        if components is None:
            model.set_code_distribution(codes)
    if components is not None:
        from .core.code_mixture import CodeMixture

        z = CodeMixture.fit(codes, components, seed=run.config.train.seed).sample(n, seed)
        with torch.inference_mode():
            model.eval()
            images = model.decode_images(z.clamp(0.0, 1.0) if model.config.code_activation == "sigmoid" else z)
    else:
        images = model.sample(n, seed=seed, size=None if size is None else tuple(size), source=source)
    if out.suffix == ".npy":
        save_npy(images, out)
    else:
        save_png(grid(images), out, scale=2)
    what = "posterior means" if model.is_variational else "codes"
    if components is not None:
        described = f"a mixture of {components} Gaussians fitted to the {what} of {fitted:,} training images"
    elif fitted is not None:
        described = f"a Gaussian fitted to the posterior means of {fitted:,} training images (not the prior)"
    elif model.is_variational:
        described = "the prior N(0, I)"
    else:
        described = "a Gaussian fitted to the training codes (a plain autoencoder has no prior: expect poor samples)"
    return {"samples": n, "source": described, "output": str(out)}


def _paired_rows(top: torch.Tensor, bottom: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Interleave chunks of ``per_row`` images: inputs, then their reconstructions, and so on."""
    pieces = []
    for start in range(0, len(top), per_row):
        pieces += [top[start : start + per_row], bottom[start : start + per_row]]
    if len(top) > per_row and len(top) % per_row:
        pad = per_row - len(top) % per_row
        filler = torch.ones(pad, *top.shape[1:])
        pieces[-2] = torch.cat([pieces[-2], filler])
        pieces[-1] = torch.cat([pieces[-1], filler])
    return grid(torch.cat(pieces), ncol=min(per_row, len(top)))

