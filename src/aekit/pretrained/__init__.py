"""Small pretrained models shipped inside the package: they load offline, right after install (an MLP per family
for MNIST and Fashion-MNIST, and ``photo-denoise`` and ``photo-denoise-grey``, blind photo denoisers).

Each model is a normal run folder (``config.json`` + ``model.safetensors`` + ``metrics.jsonl``)
plus a ``card.json`` that records how it was made (command, seed, data, options) and the test
metrics measured at creation. ``bench/make_pretrained.py`` (re)creates them all.

``aekit.pretrained`` is this module and is also callable: ``aekit.pretrained("mnist-vae")`` is
``aekit.pretrained.load("mnist-vae")``.

Examples
--------
>>> import aekit
>>> aekit.pretrained.available()[:2]
['fashion-mnist-ae', 'fashion-mnist-dae']
>>> run = aekit.pretrained("mnist-vae")
>>> run.card["metrics"]["psnr_db"] > 10
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import AekitError
from ..run import Run

CARD = "card.json"
#: The files of a shipped model folder (a run folder without its resume state, plus the card).
FILES = ("config.json", "model.safetensors", "metrics.jsonl", CARD)
DENOISE_STD = 0.5  # noise of the denoising metrics recorded in every card


def available() -> list[str]:
    """Names of the shipped models, sorted: ``<data>-<family>``, e.g. ``"mnist-vae"``."""
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())


def card(name: str) -> dict[str, Any]:
    """The model card of ``name``: command, seed, data, options and the metrics recorded at creation."""
    text = (_folder(name) / CARD).read_text(encoding="utf-8")
    return json.loads(text)


def load(name: str):
    """Load a shipped model by name.

    Parameters
    ----------
    name : str
        One of :func:`available`, e.g. ``"mnist-vae"`` or ``"fashion-mnist-dae"``.

    Returns
    -------
    Run
        ``run.model`` in eval mode, ``run.config``, ``run.card`` (a dict) and ``run.name``.

    Raises
    ------
    AekitError
        If ``name`` is not a shipped model (the message lists the names).
    """
    folder = _folder(name)
    with _as_path(folder) as path:
        run = Run.load(path)
    return dataclasses.replace(run, path=None, card=card(name), name=name)


@contextlib.contextmanager
def _as_path(folder) -> Iterator[Path]:
    """A real folder for a package resource (it already is one unless aekit is imported from a zip)."""
    if isinstance(folder, Path):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="aekit-pretrained-") as tmp:
        for name in FILES:
            if (folder / name).is_file():
                (Path(tmp) / name).write_bytes((folder / name).read_bytes())
        yield Path(tmp)


def _folder(name: str):
    names = available()
    if not isinstance(name, str) or name not in names:
        raise AekitError(f"unknown pretrained model {name!r}; available: {', '.join(names) or 'none'}")
    return resources.files(__name__) / name


def measure(run: Run, images, *, noise_std: float = DENOISE_STD) -> dict[str, float]:
    """The metrics a card records, on uint8 ``images`` (N, C, H, W); deterministic.

    ``loss``/``recon``/``kl``/``sparsity``: mean test loss terms in nats per image (fixed-seed noise, as
    in training); ``mse_per_pixel``/``psnr_db``: reconstruction error of the clean images;
    ``psnr_noisy_db``/``psnr_denoised_db``: Gaussian noise of std ``noise_std`` (seed 0), then denoised.
    """
    from ..data import ImageSet
    from ..metrics.pixels import mean_psnr
    from ..training.loop import evaluate_losses

    model = run.model
    losses = evaluate_losses(model, ImageSet(images, None, "card"), run.config)
    clean = model.prepare(images)
    recon = model.reconstruct(images)
    noisy, denoised = model.denoise(images, noise_std=noise_std, seed=0)
    return {
        "images": len(images),
        **losses,
        "mse_per_pixel": float((clean - recon).pow(2).mean()),
        "psnr_db": mean_psnr(clean, recon),
        "denoise_noise_std": noise_std,
        "psnr_noisy_db": mean_psnr(noisy, clean),
        "psnr_denoised_db": mean_psnr(denoised, clean),
    }


def measure_denoiser(run: Run, images, noise_std: float, *, seed: int = 0) -> dict[str, Any]:
    """A photo denoiser's card metrics: each uint8 image (C, H, W) of ``images`` (any sizes) plus Gaussian noise of
    std ``noise_std`` (not clipped, drawn in order from one generator seeded ``seed``), denoised blind by
    :meth:`~aekit.Autoencoder.restore`; PSNR in dB of the noisy and the denoised image, means over the images and
    each image's (the first k images of a list get the same noise as alone: a card's numbers check on a part)."""
    from ..metrics.pixels import mean_psnr

    generator = torch.Generator().manual_seed(seed)
    noisy_db, denoised_db = [], []
    for image in images:
        clean = torch.as_tensor(image)[None].float() / 255
        noisy = clean + noise_std * torch.randn(clean.shape, generator=generator)
        noisy_db.append(mean_psnr(noisy.clamp(0, 1), clean))
        denoised_db.append(mean_psnr(run.model.restore(noisy).clamp(0, 1), clean))
    return {"images": len(noisy_db), "noise_std": noise_std, "psnr_noisy_db": sum(noisy_db) / len(noisy_db),
            "psnr_denoised_db": sum(denoised_db) / len(denoised_db), "psnr_noisy_db_per_image": noisy_db,
            "psnr_denoised_db_per_image": denoised_db}


def check_photo(*, grey: bool = False) -> torch.Tensor:
    """A synthetic 3 x 80 x 120 uint8 image made of integers alone (the same bytes on every machine): colour ramps,
    a checkerboard of 20-pixel squares in the blue channel and a red disc; what a photo denoiser's card check runs
    on without data. A reproducibility check, not a quality figure: edges in one colour channel alone are rare in
    photos, and the shipped denoiser smears them (its quality is measured on CBSD68). ``grey``: 1 x 80 x 120, its
    luminance (ITU-R 601 weights, rounded in integers), for a grey denoiser's check."""
    y, x = torch.meshgrid(torch.arange(80), torch.arange(120), indexing="ij")
    red = (x * 2 + 10).clamp(max=255)
    green = 255 - y * 3
    blue = torch.where((x // 20 + y // 20) % 2 == 1, 200, 40)
    disc = (x - 60) ** 2 + (y - 40) ** 2 < 400
    image = torch.stack([torch.where(disc, 230, red), torch.where(disc, 60, green), torch.where(disc, 60, blue)])
    if grey:
        image = ((image * torch.tensor([299, 587, 114])[:, None, None]).sum(0, keepdim=True) + 500) // 1000
    return image.to(torch.uint8)


def copy_run(run_dir: Path, dest: Path, card_data: dict[str, Any]) -> None:
    """Make ``dest`` a shipped model folder from a finished run (used by ``bench/make_pretrained.py``)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES[:-1]:
        shutil.copyfile(Path(run_dir) / name, dest / name)  # plain copies: mode 0644 like any package file
    (dest / CARD).write_text(json.dumps(card_data, indent=2) + "\n", encoding="utf-8")


class _CallableModule(types.ModuleType):
    def __call__(self, name: str):
        return load(name)


# ``aekit.pretrained("mnist-vae")``: a module cannot be called unless its class says so.
sys.modules[__name__].__class__ = _CallableModule
