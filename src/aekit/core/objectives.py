"""Objectives as small pure functions: corruption, reconstruction likelihood, sparsity, the loss.

All per-image quantities are in nats (summed over pixels), shape ``(B,)``; the training loss
is their batch mean. Images are floats in [0, 1], shape ``(B, C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import AekitError
from .config import ObjectiveConfig
from .latent import standard_normal_log_prob
from .likelihoods import LIKELIHOODS
from .msssim import MS_SSIM_MIN_SIDE, ms_ssim

TERMS = ("loss", "recon", "kl", "sparsity")  # the loss and its terms, in this order wherever they are listed
MS_SSIM_FLOOR = 1e-6  # the clamp of MS-SSIM's terms in a training loss: their powers are infinitely steep at 0


def draw_noise(
    x: torch.Tensor, config: ObjectiveConfig, latent_shape: int | tuple[int, ...], latent: str | bool,
    generator: torch.Generator | None,
) -> dict[str, torch.Tensor]:
    """All the randomness of one training step, drawn eagerly from ``generator``. ``latent_shape``: one image's
    code, ``D`` or ``(C, h, w)`` (``model.latent_shape(H, W)``); ``latent``: the code's kind (``model.config.latent``;
    True or False: gaussian or point).

    Keeping it out of the loss lets ``torch.compile`` trace the loss as one graph, and
    makes a step's randomness a function of the generator state alone (exact resume).
    """
    noise: dict[str, torch.Tensor] = {}
    if config.noise_std > 0:
        noise["gauss"] = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if config.noise_std_min is not None:  # blind denoising: a std per image, uniform in [min, noise_std]
            low = config.noise_std_min / config.noise_std
            u = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, dtype=x.dtype, device=x.device)
            noise["gauss"] = noise["gauss"] * (low + (1 - low) * u)
            noise["level"] = config.noise_std * (low + (1 - low) * u)  # each image's std (B, 1, ..., 1): no new draw
    if config.mask_prob > 0:
        noise["mask"] = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if config.salt_pepper > 0:
        noise["salt_pepper"] = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    kind = ("gaussian" if latent else "point") if isinstance(latent, bool) else latent
    code = (latent_shape,) if isinstance(latent_shape, int) else tuple(latent_shape)
    if kind in ("entropy", "hyperprior"):  # rounding's stand-in in training: U(-1/2, 1/2) (Balle et al. 2017)
        noise["uniform"] = torch.rand((x.shape[0], *code), generator=generator, dtype=x.dtype, device=x.device) - 0.5
    if kind == "hyperprior":  # and for the side code: as many channels, a quarter of the positions
        side = (x.shape[0], code[0], -(-code[1] // 4), -(-code[2] // 4))
        noise["side_uniform"] = torch.rand(side, generator=generator, dtype=x.dtype, device=x.device) - 0.5
    if kind == "gaussian":
        k = config.importance_samples  # (K, B, *code) for the IWAE bound; (B, *code) for the ELBO
        shape = (x.shape[0], *code) if k == 1 else (k, x.shape[0], *code)
        noise["eps"] = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    return noise


def apply_corruption(
    x: torch.Tensor, noise: dict[str, torch.Tensor], *, noise_std: float, mask_prob: float, salt_pepper: float,
    clip: bool = True,
) -> torch.Tensor:
    """Corrupt clean images with pre-drawn noise (Vincent et al. 2008); clipped to [0, 1] unless ``clip`` is off."""
    out = x
    if noise_std > 0:
        out = out + noise_std * noise["gauss"]
    if mask_prob > 0:
        out = out * (noise["mask"] >= mask_prob)
    if salt_pepper > 0:
        u = noise["salt_pepper"]
        out = torch.where(u < salt_pepper / 2, 0.0, out)
        out = torch.where((u >= salt_pepper / 2) & (u < salt_pepper), 1.0, out)
    return out.clamp(0.0, 1.0) if out is not x and clip else out


def with_noise_level(x: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    """Images (B, C, H, W) with their noise std as one more plane (B, C + 1, H, W): FFDNet's noise level map (Zhang
    et al. 2018), constant over each image; ``level`` a number or one per image."""
    level = torch.as_tensor(level, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    return torch.cat([x, level.expand(x.shape[0], 1, *x.shape[-2:])], dim=1)


def corrupt(
    x: torch.Tensor,
    *,
    noise_std: float = 0.0,
    mask_prob: float = 0.0,
    salt_pepper: float = 0.0,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """Corrupt clean images for denoising; the result is clipped to [0, 1] (unless ``clip`` is off)."""
    config = ObjectiveConfig(noise_std=noise_std, mask_prob=mask_prob, salt_pepper=salt_pepper)
    noise = draw_noise(x, config, (), False, generator)
    return apply_corruption(x, noise, noise_std=noise_std, mask_prob=mask_prob, salt_pepper=salt_pepper, clip=clip)


def reconstruction_nll(logits: torch.Tensor, target: torch.Tensor, objective: ObjectiveConfig) -> torch.Tensor:
    """-log p(x | z) per image, in nats, under the objective's likelihood: (..., C, H, W) logits and targets
    that broadcast -> (...).

    Broadcasting lets the importance-sampled evaluation score (K, B, C, H, W) decodings against
    (B, C, H, W) images without copying the images K times.
    """
    if objective.lmbda is not None and objective.distortion == "ms-ssim":  # lambda (1 - MS-SSIM) per pixel, in nats
        c, h, w = target.shape[-3:]
        if min(h, w) < MS_SSIM_MIN_SIDE:
            raise AekitError(f"--distortion ms-ssim needs images at least {MS_SSIM_MIN_SIDE} pixels a side (its 5 "
                             f"scales), got {h}x{w}: train on larger images or crops (--crop 192)")
        mean = torch.sigmoid(logits[..., :c, :, :])
        similarity = ms_ssim(mean.reshape(-1, c, h, w), target.expand_as(mean).reshape(-1, c, h, w),
                             floor=MS_SSIM_FLOOR).to(mean.dtype).view(mean.shape[:-3])
        return objective.lmbda * h * w * math.log(2) * (1 - similarity)
    if objective.lmbda is not None:  # lambda 255^2 MSE per pixel, in nats per image: (lambda 255^2 ln 2 / C) x SSE
        weight = objective.lmbda * 255**2 * math.log(2) / target.shape[-3]
        return weight * (torch.sigmoid(logits[..., : target.shape[-3], :, :]) - target).pow(2).sum((-3, -2, -1))
    return LIKELIHOODS[objective.likelihood].nll(logits, target, objective.gaussian_std).sum((-3, -2, -1))


def log_importance_weight(log_likelihood: torch.Tensor, z: torch.Tensor, posterior, beta: float = 1.0) -> torch.Tensor:
    """log w = log p(x|z) + beta (log p(z) - log q(z|x)) for samples z (..., B, D) of q: (..., B)."""
    prior = standard_normal_log_prob(z, len(posterior.event_dims))
    return log_likelihood + beta * prior - beta * posterior.log_prob(z)


def importance_weighted_bound(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k over the K samples of (K, B) log-weights: (B,). A lower bound on log p(x) that rises
    to it as K grows, the ELBO at K = 1 (Burda et al. 2015, Eq. 8)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def beta_kl(posterior, noise: dict[str, torch.Tensor], config: ObjectiveConfig) -> torch.Tensor:
    """The KL term of the loss (a batch mean): beta x KL, where with free bits each latent unit's batch-mean KL
    counts at least ``free_bits`` nats (Kingma et al. 2016, Eq. 15), and during ``kl_warmup`` beta is scaled by
    the step's weight (in ``noise``). The reported ``kl`` stays the plain KL."""
    if config.free_bits > 0:
        kl = posterior.kl_per_dim().mean(0).clamp(min=config.free_bits).sum()
    else:
        kl = posterior.kl().mean()
    weight = noise.get("kl_weight")
    return config.beta * (kl if weight is None else weight * kl)


def l1_sparsity(codes: torch.Tensor) -> torch.Tensor:
    """L1 penalty on latent activations, per image: (B, D) or (B, C, h, w) -> (B,)."""
    return codes.abs().flatten(1).sum(1)


KL_SPARSITY_EPS = 1e-6  # rho_hat is clamped to [eps, 1 - eps]


def kl_sparsity(
    codes: torch.Tensor, target: float, eps: float = KL_SPARSITY_EPS, batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j), rho_hat_j = batch mean of unit j (Ng 2011, "Sparse autoencoder").

    Returns a scalar: it is a property of the batch, not of one image. When the batch is split over
    several processes, ``batch_mean`` averages a (D,) statistic over them: rho_hat is then the whole
    batch's mean, and this process's gradient flows through its own part, so that the processes'
    averaged gradients are the one-process gradient.
    """
    rho_hat = codes.flatten(1).mean(0)  # (B, D) -> (D,); a map's units are its C x h x w values
    if batch_mean is not None:  # value: the whole batch's; gradient: this process's mean's (DDP's average over
        rho_hat = rho_hat + (batch_mean(rho_hat) - rho_hat).detach()  # the processes makes it the whole batch's)
    rho_hat = rho_hat.clamp(eps, 1 - eps)
    rho = target
    return torch.sum(rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat)))


def loss_terms(
    model: torch.nn.Module,
    x: torch.Tensor,
    config: ObjectiveConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The loss of a batch of clean images and its terms (batch means, nats per image).

    The encoder sees the corrupted image, the likelihood scores the clean one.
    Returns ``{"loss", "recon", "kl", "sparsity"}`` scalars. With ``importance_samples`` K > 1 the
    loss is minus the IWAE bound (not recon + beta * kl); recon averages the K samples' NLLs.
    """
    noise = draw_noise(x, config, model.latent_shape(x), model.config.latent, generator)
    return loss_with_noise(model, x, noise, config)


def loss_with_noise(
    model: torch.nn.Module, x: torch.Tensor, noise: dict[str, torch.Tensor], config: ObjectiveConfig,
    batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`loss_terms` given the step's noise (from :func:`draw_noise`): a pure function, compilable.

    ``batch_mean``: for a batch split over processes, see :func:`kl_sparsity` (every other term is a
    mean over images, which DistributedDataParallel's gradient average already makes global)."""
    inputs = apply_corruption(x, noise, noise_std=config.noise_std, mask_prob=config.mask_prob,
                              salt_pepper=config.salt_pepper, clip=config.noise_clip)
    if model.config.noise_level_input:  # FFDNet: the model is told each image's noise std, as a plane
        level = noise["level"] if "level" in noise else x.new_full((x.shape[0], 1, 1, 1), config.noise_std)
        inputs = with_noise_level(inputs, level)
    posterior = model.encode(inputs)
    if "uniform" in noise:  # a quantized code in training: y + u instead of round(y)
        posterior = posterior.with_noise(noise["uniform"], noise.get("side_uniform"))
    kl_cost = beta_kl(posterior, noise, config)  # what the KL costs in the loss: beta, warm-up and free bits
    # Reparameterisation: z = mu + sigma * eps; Kingma & Welling 2013, Sec. 2.4
    z = posterior.mean + posterior.std * noise["eps"] if "eps" in noise else posterior.mode()
    kl = posterior.kl().mean()
    size = x.shape[-2:]  # a spatial model decodes the padded size: cropped back to the images'
    if z.dim() > posterior.mean.dim():  # K importance samples per image: the IWAE bound (Burda et al. 2015, Eq. 8)
        k, b = z.shape[:2]
        logits = model.decode(z.reshape(k * b, *z.shape[2:]), size=size).unflatten(0, (k, b))
        nll = reconstruction_nll(logits, x, config)  # (K, B)
        beta = config.beta * noise["kl_weight"] if "kl_weight" in noise else config.beta
        bound = importance_weighted_bound(log_importance_weight(-nll, z, posterior, beta))  # (B,)
        recon = nll.mean()  # reported: the ELBO's terms, averaged over the K samples
        loss = -bound.mean()
    else:
        logits = model.decode(z, size=size)
        recon = reconstruction_nll(logits, x, config).mean()
        loss = recon + kl_cost
    if config.sparsity == "l1":
        sparsity = l1_sparsity(posterior.mode()).mean()
    elif config.sparsity == "kl":
        sparsity = kl_sparsity(posterior.mode(), config.sparsity_target, batch_mean=batch_mean)
    else:
        sparsity = x.new_zeros(())
    loss = loss + config.sparsity_weight * sparsity
    return {"loss": loss, "recon": recon, "kl": kl, "sparsity": sparsity}
