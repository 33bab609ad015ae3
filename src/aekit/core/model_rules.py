"""How a :class:`aekit.core.config.ModelConfig`'s options must agree: which latents need a spatial code, which
backbones take which options. ``ModelConfig.__post_init__`` calls these; a disagreement is a one-line
:class:`AekitError`."""

from __future__ import annotations

from ..errors import AekitError

QUANTIZED = ("entropy", "hyperprior")  # the latents of compressors: integer codes with a rate


def check_latent(m) -> None:
    sigmoid = m.code_activation != "none"
    if m.pca_path and (m.spatial or sigmoid):
        raise AekitError("pca_path needs a vector code without a sigmoid (--latent-dim, not --latent-channels or the "
                         "sae preset's sigmoid codes)")
    if m.latent in QUANTIZED and (not m.spatial or sigmoid):
        raise AekitError(f"a {m.latent} latent needs a spatial code (--latent-channels C, --arch resnet), no sigmoid")
    if m.latent == "gaussian" and sigmoid:
        raise AekitError("a gaussian latent cannot have a sigmoid code activation")


def check_spatial(m) -> None:
    """The backbone options that only the resnet (and unet, gdn) takes, and whether they agree."""
    if m.noise_level_input and m.arch != "unet":
        raise AekitError(f"--noise-level-input needs --arch unet, the photo denoiser (got --arch {m.arch})")
    if m.arch == "gdn":
        for name, value in (("blocks", m.blocks if m.blocks != 1 else 0), ("patch", m.patch if m.patch != 2 else 0)):
            if value:
                raise AekitError(f"{name} needs --arch resnet (got --arch gdn)")
        if not m.spatial or len(m.hidden) > 6 or (m.downsample and m.downsample != m.factor):
            raise AekitError(f"--arch gdn needs --latent-channels C and at most 6 widths, one per halving (--hidden "
                             f"{','.join(map(str, m.hidden))} gives a factor of {m.factor}; --downsample "
                             f"{m.downsample or 'unset'})")
        return
    if m.arch not in ("resnet", "unet"):
        for name, value in (("latent_channels", m.latent_channels), ("downsample", m.downsample),
                            ("blocks", m.blocks if m.blocks != 1 else 0), ("patch", m.patch if m.patch != 2 else 0)):
            if value:
                raise AekitError(f"{name} needs --arch resnet (got --arch {m.arch})")
        return
    if m.arch == "unet":
        if not m.spatial or m.downsample not in (0, m.patch) or len(m.hidden) > 7:
            raise AekitError(f"--arch unet needs --latent-channels C, at most 7 stage widths and no --downsample other "
                             f"than --patch {m.patch} (its code is at H/patch x W/patch)")
        return
    if len(m.hidden) > 7:
        raise AekitError("a resnet backbone takes at most 7 stage widths (a factor of 64)")
    if m.downsample and (m.downsample & (m.downsample - 1) or m.downsample < m.patch):
        raise AekitError(f"downsample must be a power of 2 and at least --patch {m.patch} (got {m.downsample})")
    if m.downsample and m.downsample != m.factor:
        stages = (m.downsample // m.patch).bit_length()
        raise AekitError(f"downsample {m.downsample} with --patch {m.patch} needs {stages} stage widths; --hidden "
                         f"{','.join(map(str, m.hidden))} gives {len(m.hidden)} stages, a factor of {m.factor}")
