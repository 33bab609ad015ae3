"""The one autoencoder skeleton: encoder -> latent head -> decoder.

Families differ only in their parts (``config.preset``); the objective lives in
``objectives.py``. High-level helpers (``embed``, ``reconstruct``, ``denoise``,
``sample``) take images as uint8 or floats in [0, 1] and work in batches without
gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.imageset import to_unit
from ..errors import AekitError
from .config import QUANTIZED, ModelConfig
from .entropy import EntropyHead, HyperpriorHead
from .latent import DiagonalGaussian, GaussianHead, PointHead, PointPosterior
from .nets import build_backbones
from .objectives import corrupt, with_noise_level
from .resnet import receptive_radius
from .tiling import TILE_ABOVE, tiled

PCA_FIT_BYTES = 512 * 1024 * 1024  # the images a PCA path is fitted on, as floats: evenly spaced, at most this much
PCA_EPS = 1e-3  # the PCA path's pixels are clamped to [eps, 1 - eps] before their logits


class Autoencoder(nn.Module):
    """An image autoencoder built from a :class:`ModelConfig`.

    Parameters
    ----------
    config : ModelConfig
        Backbone, image shape and latent.

    Examples
    --------
    >>> import torch, aekit
    >>> model = aekit.Autoencoder(aekit.ModelConfig(latent="gaussian", latent_dim=8))
    >>> model.embed(torch.zeros(5, 1, 28, 28, dtype=torch.uint8)).shape
    torch.Size([5, 8])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder, self.decoder, feature_dim = build_backbones(config)
        units = config.latent_channels if config.spatial else config.latent_dim
        if config.latent == "entropy":
            self.head: nn.Module = EntropyHead(feature_dim, units)
        elif config.latent == "hyperprior":
            self.head = HyperpriorHead(feature_dim, units, units)
        elif config.latent == "gaussian":
            self.head = GaussianHead(feature_dim, units, spatial=config.spatial)
        else:
            self.head = PointHead(feature_dim, units, config.code_activation, spatial=config.spatial)
        # A Gaussian fitted to the training codes: how a deterministic AE "samples". A spatial latent's is
        # over its channels, shared by every position (so it samples any size).
        self.register_buffer("code_mean", torch.zeros(units))
        self.register_buffer("code_scale_tril", torch.eye(units))
        if config.pca_path:  # the frozen linear path (fitted by init_output_bias); the learned corrections start at 0
            d = math.prod(config.image_shape)
            self.register_buffer("pca_mean", torch.zeros(d))
            self.register_buffer("pca_components", torch.zeros(units, d))  # (k, D): orthonormal rows
            self.register_buffer("pca_scale", torch.ones(units))  # sqrt of each component's variance: whitened codes
            with torch.no_grad():
                _zero_mean_rows(self.head.mean if isinstance(self.head, GaussianHead) else self.head.linear, 1)
                _zero_mean_rows(_last_layer(self.decoder), config.outputs)

    @torch.no_grad()
    def init_output_bias(self, images: torch.Tensor) -> None:
        """Data-dependent init: make the untrained decoder output the mean training image (and, with
        ``pca_path``, fit the PCA path).

        A decoder that starts at sigmoid(0) = 0.5 everywhere spends its first hundreds of steps
        learning the mean image (a plateau of about 200 nats on MNIST); starting there skips it.
        ``images``: uint8 (N, C, H, W), or an iterable of such batches (a streamed dataset); images larger
        than the model's (a training on ``--crop``) count by their centre.
        """
        batches = images.split(4096) if isinstance(images, torch.Tensor) else images  # int64 copies stay small
        _, h, w = self.config.image_shape
        total, n = torch.zeros(self.config.image_shape, dtype=torch.int64), 0
        budget = max(self.config.latent_dim, PCA_FIT_BYTES // (4 * total.numel())) if self.config.pca_path else 0
        kept, stride = [], 1  # every stride-th image, the stride doubling whenever more than the budget are kept
        for batch in batches:  # integer sums are exact: the same mean in memory or streamed, in any batches
            top, left = (batch.shape[-2] - h) // 2, (batch.shape[-1] - w) // 2
            crops = batch[..., top:top + h, left:left + w]
            total += crops.sum(0, dtype=torch.int64)  # (B, C, H, W) -> (C, H, W)
            if budget:
                kept += list(crops[(-n) % stride:: stride].clone())
                while len(kept) > budget:
                    kept, stride = kept[::2], 2 * stride
            n += len(batch)
        mean = total.float().div_(max(n, 1)).div_(255)  # (C, H, W)
        if self.config.pca_path:  # the decoder's own output is a correction to PCA's: it starts from 0
            self._fit_pca(torch.stack(kept) if kept else torch.zeros(0, *total.shape), mean)
        else:
            self.decoder.init_output_bias(torch.logit(mean.clamp_(1e-3, 1 - 1e-3)))  # a scale's log stays as it is

    def update_tables(self) -> None:
        """Freeze a quantized latent's densities into the integer tables a file is coded with (else nothing)."""
        if self.config.latent in QUANTIZED:
            self.head.update_tables()

    def _fit_pca(self, images: torch.Tensor, mean: torch.Tensor) -> None:
        """The PCA path's components from uint8 images (N, C, H, W) and the training mean (C, H, W) in [0, 1]:
        a randomized SVD (Halko et al. 2011; 6 power iterations, a fixed seed: the same fit every time)."""
        k = self.config.latent_dim
        if len(images) < k:
            raise AekitError(f"pca_path with a {k}-number code needs at least {k} training images (got {len(images)})")
        x = images.flatten(1).float().div_(255).sub_(mean.flatten())  # (N, D), centred
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _, s, v = torch.svd_lowrank(x, q=min(k + 16, *x.shape), niter=6)
        self.pca_mean.copy_(mean.flatten())
        self.pca_components.copy_(v[:, :k].T)  # (D, q) -> (k, D)
        self.pca_scale.copy_((s[:k] / math.sqrt(max(len(x) - 1, 1))).clamp_min(1e-6))

    def _pca_code(self, dist, x: torch.Tensor):
        """The code: the whitened PCA code of ``x`` (B, C, H, W) plus the learned correction."""
        pca = (x.flatten(1) - self.pca_mean) @ self.pca_components.T / self.pca_scale  # (B, D) -> (B, k)
        if isinstance(dist, DiagonalGaussian):
            return DiagonalGaussian(pca + dist.mean, dist.logvar)
        return PointPosterior(pca + dist.mean)

    def _pca_image(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The decoder's logits: PCA's reconstruction of ``z`` (..., k) plus the learned correction ``out``."""
        c = self.config.channels
        pixels = (z * self.pca_scale) @ self.pca_components + self.pca_mean  # (..., k) -> (..., D)
        logits = torch.logit(pixels.clamp(PCA_EPS, 1 - PCA_EPS)).view(*z.shape[:-1], *self.config.image_shape)
        mean = logits + out[..., :c, :, :]
        return mean if out.shape[-3] == c else torch.cat([mean, out[..., c:, :, :]], dim=-3)

    def mean(self, outputs: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1]: the sigmoid of its first C output channels (the mean's logits;
        a likelihood with a learned scale has its log-scale after them)."""
        c = self.config.channels
        return torch.sigmoid(outputs if outputs.shape[-3] == c else outputs[..., :c, :, :])

    @property
    def is_variational(self) -> bool:
        return self.config.latent == "gaussian"

    @property
    def can_sample(self) -> bool:
        """Whether decoded code draws are images: not for the unet, whose code is a denoiser's features with the
        detail held in its skips (no bottleneck), so neither a prior nor a Gaussian over it describes images."""
        return self.config.arch != "unet"

    def latent_shape(self, images: torch.Tensor | tuple[int, int] | None = None) -> tuple[int, ...]:
        """One image's code: ``(D,)``, or ``(C, h, w)`` for a spatial latent and images (or an ``(H, W)``) of that
        size (default the training size)."""
        if not self.config.spatial:
            return (self.config.latent_dim,)
        if isinstance(images, torch.Tensor):
            images = tuple(images.shape[-2:])
        return self.config.latent_shape(*(images or (None, None)))

    def encode(self, x: torch.Tensor):
        """(B, C, H, W) floats in [0, 1] -> a code distribution over (B, D), or (B, C', H/f, W/f) for a spatial
        latent (the images padded to a multiple of f by reflection)."""
        f = self.config.factor
        if self.config.spatial and (x.shape[-2] % f or x.shape[-1] % f):
            pad_h, pad_w = -x.shape[-2] % f, -x.shape[-1] % f
            mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        dist = self.head(self.encoder(x))
        return self._pca_code(dist, x) if self.config.pca_path else dist

    def decode(self, z: torch.Tensor, size: tuple[int, int] | torch.Size | None = None) -> torch.Tensor:
        """(B, D) or (B, C', h, w) -> (B, C, H, W) logits, cropped to ``size`` (H, W) when given (a spatial
        latent decodes the padded size); :meth:`mean` maps them to [0, 1]."""
        scale = self.config.code_scale
        out = self.decoder(z if scale == 1.0 else z * scale)
        if self.config.pca_path:
            out = self._pca_image(z, out)
        if size is not None and tuple(out.shape[-2:]) != tuple(size):
            out = out[..., : size[0], : size[1]]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (posterior mode decoded) in [0, 1], of the images' size."""
        return self.mean(self.decode(self.encode(x).mode(), size=x.shape[-2:]))

    # ----- high-level helpers: no gradients, batched, images as uint8 or [0, 1] floats -----

    def prepare(self, images) -> torch.Tensor:
        """Images (numpy or torch; uint8 or floats in [0, 1]; (N, C, H, W)) -> float tensor in [0, 1]."""
        return _to_unit_float(self._checked(images))

    def _checked(self, images) -> torch.Tensor:
        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        if x.ndim == 3 and self.config.channels == 1:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        if self.config.spatial:  # fully convolutional: any size, the model's channels
            if x.ndim != 4 or x.shape[1] != self.config.channels or min(x.shape[2:], default=0) < 1:
                raise AekitError(f"images have shape {tuple(x.shape)}; this model takes (N, {self.config.channels}, "
                                 "H, W) of any size")
        elif x.ndim != 4 or tuple(x.shape[1:]) != self.config.image_shape:
            raise AekitError(
                f"images have shape {tuple(x.shape)}; this model takes (N, "
                f"{', '.join(map(str, self.config.image_shape))})"
            )
        return x

    def _batches(self, images, batch_size: int) -> Iterator[torch.Tensor]:
        x = self._checked(images)
        for start in range(0, len(x), batch_size):
            yield _to_unit_float(x[start : start + batch_size])

    def told(self, x: torch.Tensor, noise_level: float | torch.Tensor | None) -> torch.Tensor:
        """The encoder's input for images ``x``: with ``noise_level_input``, their noise std as one more plane (0,
        clean images, when None); other models take ``x`` as it is and ignore the level."""
        if not self.config.noise_level_input:
            return x
        return with_noise_level(x, 0.0 if noise_level is None else noise_level)

    @torch.inference_mode()
    def embed(self, images, batch_size: int = 1024) -> torch.Tensor:
        """Codes (posterior means for a VAE): (N, C, H, W) -> (N, D), or (N, C', h, w) for a spatial latent."""
        self.eval()
        out = [self.encode(self.told(x, None)).mode() for x in self._batches(images, batch_size)]
        return torch.cat(out) if out else torch.empty(0, *self.latent_shape())

    @torch.inference_mode()
    def decode_images(self, codes, batch_size: int = 1024, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Codes (N, D) or (N, C', h, w) -> mean images in [0, 1], (N, C, H, W) (cropped to ``size``)."""
        self.eval()
        z = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes).float()
        want = self.latent_shape()
        if z.ndim != 1 + len(want) or z.shape[1] != want[0]:
            shape = ", ".join(map(str, want)) if not self.config.spatial else f"{want[0]}, h, w"
            raise AekitError(f"codes have shape {tuple(z.shape)}; this model takes (N, {shape})")
        out = [self.mean(self.decode(chunk, size=size)) for chunk in z.split(batch_size)]
        return torch.cat(out) if out else torch.empty(0, *self.config.image_shape)

    def _whole_or_tiled(self, x: torch.Tensor, self_ensemble: bool = False) -> torch.Tensor:
        """``self(x)``; a large photo through a spatial latent in overlapping tiles (bounded memory, no seams).
        ``self_ensemble``: the mean of the outputs for the 8 rotations and mirror images of ``x``, each turned back
        (a fully convolutional model only: 8 times the work, for a slightly better output)."""
        if self_ensemble:
            if not self.config.spatial:
                raise AekitError("self-ensemble needs a fully convolutional model (a spatial latent): a vector code "
                                 "is tied to its image's orientation")
            total = torch.zeros_like(x[:, :self.config.channels])
            for turns in range(4):
                for mirror in (False, True):
                    t = torch.rot90(x, turns, (2, 3))
                    y = self._whole_or_tiled(t.flip(3) if mirror else t)
                    total += torch.rot90(y.flip(3) if mirror else y, -turns, (2, 3))
            return total / 8
        if self.config.spatial and x.shape[-2] * x.shape[-1] > TILE_ABOVE:
            return tiled(self, x, factor=self.config.grid, margin=receptive_radius(self.config))
        return self(x)

    @torch.inference_mode()
    def reconstruct(self, images, batch_size: int = 1024, noise_level: float | None = None,
                    self_ensemble: bool = False) -> torch.Tensor:
        """Decode the code of each image: (N, C, H, W) -> (N, C, H, W) in [0, 1] (a large photo in tiles); a model
        told the noise level (``noise_level_input``) is told ``noise_level`` (default 0: clean images).
        ``self_ensemble``: the mean over the image's 8 rotations and mirror images (8 times the work)."""
        self.eval()
        out = [self._whole_or_tiled(self.told(x, noise_level), self_ensemble)
               for x in self._batches(images, batch_size)]
        return torch.cat(out) if out else torch.empty(0, *self.config.image_shape)

    @torch.inference_mode()
    def restore(self, x: torch.Tensor, noise_level: float | None = None, self_ensemble: bool = False) -> torch.Tensor:
        """The model's output for float images (N, C, H, W) taken as they are, values outside [0, 1] included: the
        noisy images of a denoising benchmark, whose Gaussian noise is not clipped (a large photo in tiles). A model
        told the noise level (``noise_level_input``) needs ``noise_level``, their noise std. ``self_ensemble``: the
        mean over the image's 8 rotations and mirror images (8 times the work)."""
        if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != self.config.channels or not torch.isfinite(x).all():
            raise AekitError(f"restore takes finite float images (N, {self.config.channels}, H, W); got "
                             f"{tuple(x.shape)}")
        if self.config.noise_level_input and noise_level is None:
            raise AekitError("this model is told the noise level (--noise-level-input): give the images' noise std")
        self.eval()
        chunks = [self._whole_or_tiled(self.told(chunk.float(), noise_level), self_ensemble) for chunk in x.split(1)]
        return torch.cat(chunks) if len(x) else x.float()

    @torch.inference_mode()
    def denoise(self, images, noise_std: float, seed: int = 0, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Add Gaussian noise (clipped to [0, 1]) and reconstruct: returns ``(noisy, denoised)``."""
        if not noise_std >= 0:
            raise AekitError(f"noise std must be >= 0 (got {noise_std})")
        self.eval()
        generator = torch.Generator().manual_seed(seed)
        noisy, clean = [], []
        for x in self._batches(images, batch_size):
            x_noisy = corrupt(x, noise_std=noise_std, generator=generator)
            noisy.append(x_noisy)
            clean.append(self._whole_or_tiled(self.told(x_noisy, noise_std)))
        empty = torch.empty(0, *self.config.image_shape)
        return (torch.cat(noisy) if noisy else empty), (torch.cat(clean) if clean else empty)

    @torch.inference_mode()
    def sample(self, n: int, seed: int = 0, size: tuple[int, int] | None = None,
               source: str | None = None) -> torch.Tensor:
        """``n`` new images in [0, 1]: decoded draws from the prior N(0, I) for a VAE, from the
        Gaussian fitted to the training codes for a deterministic autoencoder. ``size`` (H, W): a spatial
        latent's images of another size than the training one. ``source``: ``"prior"`` or ``"codes"`` (see
        :meth:`draw_codes`)."""
        if n < 1:
            raise AekitError(f"the number of samples must be >= 1 (got {n})")
        self.eval()
        z = self.draw_codes(n, seed, size, source)
        return self.decode_images(z, size=size)

    def draw_codes(self, n: int, seed: int = 0, size: tuple[int, int] | None = None,
                   source: str | None = None) -> torch.Tensor:
        """The codes :meth:`sample` decodes, (n, D) or (n, C, h, w): ``n`` draws from the prior N(0, I)
        (``source="prior"``, a VAE's default) or from the Gaussian fitted to the training codes (``"codes"``, a
        deterministic autoencoder's only source; a VAE's after :meth:`fit_code_distribution` on its posterior
        means: a density fitted after training, which follows the codes where the prior leaves holes). A map's
        Gaussian is over its channels, the same at every position."""
        if not self.can_sample:
            raise AekitError("this model (--arch unet) has no bottleneck to sample from: its code is a denoiser's "
                             "features, the detail is in its skips")
        source = source or ("prior" if self.is_variational else "codes")
        if source not in ("prior", "codes"):
            raise AekitError(f"the source of samples is 'prior' or 'codes' (got {source!r})")
        if source == "prior" and not self.is_variational:
            raise AekitError("a deterministic autoencoder has no prior: its samples come from the Gaussian fitted to "
                             "its training codes (source 'codes')")
        if source == "codes" and self.is_variational and not self.code_distribution_fitted:
            raise AekitError("this VAE's code Gaussian is not fitted: call fit_code_distribution(training images) "
                             "first (aekit sample --source codes does it)")
        generator = torch.Generator().manual_seed(seed)
        shape = self.latent_shape(size)
        if self.config.spatial:  # channels last for the draw, then (n, h, w, C) -> (n, C, h, w)
            eps = torch.randn(n, *shape[1:], shape[0], generator=generator)
        else:
            eps = torch.randn(n, *shape, generator=generator)
        z = eps if source == "prior" else self.code_mean + eps @ self.code_scale_tril.T
        z = z.permute(0, 3, 1, 2) if self.config.spatial else z
        return z.clamp(0.0, 1.0) if self.config.code_activation == "sigmoid" else z

    @property
    def code_distribution_fitted(self) -> bool:
        """Whether the code Gaussian was fitted (it starts as N(0, I), which no fit gives exactly)."""
        return not (torch.equal(self.code_mean, torch.zeros_like(self.code_mean))
                    and torch.equal(self.code_scale_tril, torch.eye(len(self.code_mean)).to(self.code_scale_tril)))

    @torch.inference_mode()
    def fit_code_distribution(self, images, batch_size: int = 1024) -> None:
        """Fit ``code_mean`` and ``code_scale_tril`` (Cholesky of the covariance) to the codes of ``images``."""
        self.set_code_distribution(self.embed(images, batch_size))

    @torch.inference_mode()
    def set_code_distribution(self, codes: torch.Tensor) -> None:
        """Fit ``code_mean`` and ``code_scale_tril`` to (N, D) codes (a spatial latent's (N, C, h, w): over
        its channels, every position an observation)."""
        if codes.dim() == 4:
            codes = codes.permute(0, 2, 3, 1).reshape(-1, codes.shape[1])  # (N, C, h, w) -> (N h w, C)
        codes = codes.double()
        mean = codes.mean(0)
        centred = codes - mean
        cov = centred.T @ centred / max(len(codes) - 1, 1)
        cov = cov + 1e-6 * torch.eye(len(mean), dtype=cov.dtype) * (1 + cov.diagonal().mean())
        self.code_mean.copy_(mean.float())
        self.code_scale_tril.copy_(torch.linalg.cholesky(cov).float())


def parameter_count(config: ModelConfig) -> int:
    """The number of weights a model of ``config`` has, counted without allocating them (on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in Autoencoder(config).parameters())


def _to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [0, 1]; float images are checked to be in [0, 1] (a user's), then float32."""
    if x.dtype == torch.uint8:
        return to_unit(x)
    x = x.float()
    if x.numel() and not (torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise AekitError("float images must be finite and in [0, 1] (uint8 images may be 0..255)")
    return x


def _last_layer(net: nn.Module) -> nn.Module:
    """The last layer with weights that ``net`` builds (its output layer, for the decoders here)."""
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))][-1]


def _zero_mean_rows(layer: nn.Module, outputs: int) -> None:
    """Zero the weights and biases of a layer's first 1 / ``outputs`` of output units: a decoder's mean channels
    (every decoder here orders its outputs mean channels first), or all of a code head's."""
    dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    n = layer.weight.shape[dim] // outputs
    layer.weight.narrow(dim, 0, n).zero_()
    layer.bias[:n].zero_()
