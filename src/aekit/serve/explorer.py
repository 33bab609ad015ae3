"""What the latent-space explorer shows, computed from a model and its test images; no web code here.

The map is the latent itself when it has one or two dimensions, else the PCA plane of the test codes.
A map position ``p`` (2,) goes back to the latent through the same linear map, ``z = mean + p @ axes``:
the point of the plane spanned by the two principal axes, so moving on the map moves in the latent
exactly, and a test code is drawn at its projection ``(z - mean) @ axes.T``.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch

from ..anomaly import heatmap
from ..data import ImageSet
from ..imaging import to_pil
from ..run import Run

MAP_MAX = 10_000  # test images on the map
SLIDERS = 8  # latent dimensions with sliders
PRIOR_SD = 3.0  # a VAE's sliders span +-3 prior standard deviations


def data_url(image: torch.Tensor) -> str:
    """(C, H, W) in [0, 1] -> a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _rounded(array, digits: int = 4) -> list:
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()


def _kl_per_number(posterior) -> torch.Tensor:
    """KL to the prior of each number of the code, flat: (B, D) for a vector code, (B, C*h*w) for a map."""
    return (-0.5 * (1 + posterior.logvar - posterior.mean.pow(2) - posterior.logvar.exp())).flatten(1)


def projection(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float] | None]:
    """``(mean (D,), axes (k, D), explained variance ratios or None)``: identity for D <= 2, else PCA."""
    d = codes.shape[1]
    if d <= 2:
        return torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64), None
    z = codes.double()
    mean = z.mean(0)
    _, s, vt = torch.linalg.svd(z - mean, full_matrices=False)  # (N, D) = U diag(s) Vt
    axes = vt[:2]
    axes = axes * torch.where(axes.gather(1, axes.abs().argmax(1, keepdim=True)) < 0, -1.0, 1.0)  # fixed signs
    variance = s.pow(2)
    explained = (variance[:2] / variance.sum().clamp_min(1e-30)).tolist()
    return mean, axes, explained


class Explorer:
    """A model, its test images placed on a 2-D map, and what the page asks of them.

    Parameters
    ----------
    run : Run
        A loaded run (``aekit.load`` or ``aekit.pretrained``).
    test : ImageSet
        Images already conformed to the model's shape; the first ``MAP_MAX`` are used.
    name : str
        What the page calls the model (a run folder or a pretrained name).
    data_name : str
        What the page calls the data.
    """

    def __init__(self, run: Run, test: ImageSet, *, name: str, data_name: str) -> None:
        model = self.model = run.model.eval()
        self.family = run.config.family
        self.name, self.data_name = name, data_name
        self.images = test.images[:MAP_MAX]  # uint8 (N, C, H, W)
        self.labels = test.labels[:MAP_MAX] if test.labels is not None else None
        self.classes = test.classes
        self.code_shape = model.latent_shape()  # (D,), or (C, h, w) for a spatial latent: the map sees it flat
        self.codes = model.embed(self.images).flatten(1)  # (N, D)
        clean = model.prepare(self.images)
        pixel_errors = (model.reconstruct(self.images) - clean).pow(2).mean(1)  # (N, H, W), channels averaged
        self.errors = pixel_errors.flatten(1).mean(1)  # (N,) MSE per pixel
        self._sorted_errors = self.errors.sort().values
        # The error map's colour scale saturates at the test images' 99.9th percentile of per-pixel errors.
        sample = pixel_errors.flatten()[:: max(1, pixel_errors.numel() // 1_000_000)]
        self.map_top = float(torch.quantile(sample, 0.999)) if sample.numel() else 1.0
        self.mean, self.axes, self.explained = projection(self.codes)
        self.points = self.to_map(self.codes)
        self.sliders = self._sliders()
        self.noise_std = float(run.config.objective.noise_std) or 0.5  # the page's default sigma

    @property
    def latent_dim(self) -> int:
        return math.prod(self.code_shape)

    def __len__(self) -> int:
        return len(self.images)

    # ----- the map and the latent -----

    def to_map(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, D) codes -> (N, 2) map positions (a 1-D latent sits on y = 0)."""
        p = (codes.double() - self.mean) @ self.axes.T  # (N, D) -> (N, k)
        return torch.nn.functional.pad(p, (0, 2 - p.shape[1]))

    def from_map(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 2) map positions -> (N, D) codes on the map's plane."""
        k = self.axes.shape[0]
        return (self.mean + points.double()[:, :k] @ self.axes).float()  # (N, k) -> (N, D)

    def _sliders(self) -> list[dict]:
        """The dimensions with the largest mean KL (VAE) or variance (otherwise), with their ranges."""
        model, codes = self.model, self.codes
        if model.is_variational:
            with torch.inference_mode():
                kl = torch.cat([_kl_per_number(model.encode(model.prepare(x))) for x in self.images.split(1024)])
            score = kl.mean(0)
        else:
            score = codes.var(0, unbiased=False)
        sliders = []
        for j in score.argsort(descending=True)[: min(SLIDERS, self.latent_dim)].tolist():
            if model.is_variational:
                low, high = -PRIOR_SD, PRIOR_SD
            elif model.config.code_activation == "sigmoid":
                low, high = 0.0, 1.0
            else:
                low, high = (float(torch.quantile(codes[:, j], q)) for q in (0.01, 0.99))
                pad = max(0.1 * (high - low), 1e-3)
                low, high = low - pad, high + pad
            sliders.append({"dim": j, "score": round(float(score[j]), 4), "min": round(low, 4), "max": round(high, 4)})
        return sliders

    # ----- what the page asks for -----

    def info(self) -> dict:
        model = self.model
        variational = model.is_variational
        if self.explained is None:
            how = (f"The map is the {self.latent_dim}-D latent itself: a position is a code"
                   + (" (y is unused)." if self.latent_dim == 1 else "."))
        else:
            pct = [round(100 * r, 1) for r in self.explained]
            how = (f"The map is the PCA plane of the {self.latent_dim}-D test codes (PC 1: {pct[0]}%, PC 2: {pct[1]}% "
                   "of their variance). A position (x, y) is decoded at z = mean + x·PC1 + y·PC2, the inverse of the "
                   "projection; dots are test codes projected onto that plane.")
        return {
            "name": self.name,
            "family": self.family,
            "variational": variational,
            "latent_dim": self.latent_dim,
            "image_shape": list(model.config.image_shape),
            "data": self.data_name,
            "test_images": len(self),
            "map": {"method": "latent" if self.explained is None else "pca", "explained": self.explained, "how": how},
            "sliders": self.sliders,
            "slider_score": "KL" if variational else "variance",
            "sample_source": "the prior N(0, I)" if variational else "a Gaussian fitted to the training codes",
            "noise_std": self.noise_std,
        }

    def map(self) -> dict:
        return {
            "points": _rounded(self.points),
            "labels": self.labels.tolist() if self.labels is not None else None,
            "classes": self.classes,
            "mean": _rounded(self.mean, 6),
            "axes": _rounded(self.axes, 6),
        }

    def decode(self, codes: torch.Tensor) -> dict:
        return {"images": [data_url(x) for x in self.model.decode_images(codes.reshape(-1, *self.code_shape))]}

    def decode_map(self, points: torch.Tensor) -> dict:
        codes = self.from_map(points)
        return {**self.decode(codes), "codes": _rounded(codes, 5)}

    def sample(self, n: int, seed: int) -> dict:
        """``n`` codes drawn as ``model.sample`` draws them (prior or fitted Gaussian), and their images."""
        z = self.model.draw_codes(n, seed).flatten(1)
        return {**self.decode(z), "codes": _rounded(z, 5)}

    def percentile(self, error: float) -> float:
        """Percentage of test images reconstructed better (lower MSE) than ``error``."""
        below = int(torch.searchsorted(self._sorted_errors, torch.tensor([error]))[0])
        return round(100.0 * below / max(len(self), 1), 1)

    def test_image(self, index: int) -> dict:
        error = float(self.errors[index])
        label = int(self.labels[index]) if self.labels is not None else None
        return {
            "index": index,
            "label": label,
            "class_name": self.classes[label] if self.classes and label is not None and label < len(self.classes)
            else None,
            "image": data_url(self.model.prepare(self.images[index : index + 1])[0]),
            "code": _rounded(self.codes[index], 5),
            "position": _rounded(self.points[index]),
            "error": round(error, 6),
            "percentile": self.percentile(error),
        }

    def analyze(self, image: torch.Tensor, noise_std: float, seed: int = 0) -> dict:
        """One uint8 (1, C, H, W) image: reconstruction, denoising, map position and anomaly score."""
        model = self.model
        clean = model.prepare(image)
        recon = model.reconstruct(image)
        noisy, denoised = model.denoise(image, noise_std=noise_std, seed=seed)
        code = model.embed(image)
        same = tuple(code.shape[1:]) == self.code_shape  # a photo of another size has no place on the map
        code = code.flatten(1)
        errors = (recon - clean).pow(2).mean(1)[0]  # (H, W): where the image is unlike the training images
        error = float(errors.mean())
        return {
            "input": data_url(clean[0]),
            "reconstruction": data_url(recon[0]),
            "error_map": data_url(heatmap(errors, self.map_top)),
            "noisy": data_url(noisy[0]),
            "denoised": data_url(denoised[0]),
            "code": _rounded(code[0], 5) if same else None,
            "position": _rounded(self.to_map(code)[0]) if same else None,
            "size": list(image.shape[-2:]),
            "error": round(error, 6),
            "percentile": self.percentile(error),
            "noise_std": noise_std,
        }

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, frames: int) -> dict:
        """Decoded codes on the straight line from ``a`` to ``b`` (D,), ``frames`` of them, ends included."""
        t = torch.linspace(0, 1, frames)[:, None]  # (F, 1)
        codes = (1 - t) * a[None] + t * b[None]  # (F, D)
        return {**self.decode(codes), "codes": _rounded(codes, 5), "positions": _rounded(self.to_map(codes))}
