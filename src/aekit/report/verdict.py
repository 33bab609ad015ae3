"""The verdict at the top of a report: what the metrics say about the run, in plain sentences (HTML)."""

from __future__ import annotations

from .tables import escape_html as _e
from .tables import number as _num


def verdict(metrics: dict, history: list[dict] | None = None) -> list[str]:
    """Plain-language sentences (HTML) for the top of the report."""
    out = []
    r, p = metrics.get("reconstruction", {}), metrics.get("pca", {})
    if r and p:
        ratio = r["mse_per_pixel"] / p["mse_per_pixel"] if p["mse_per_pixel"] > 0 else float("inf")
        if p.get("beats_pca"):
            judgement = f'<span class="good">beats PCA</span> on MSE ({100 * (1 - ratio):.0f}% lower)'
        else:
            judgement = f'<span class="bad">does not beat PCA</span> on MSE ({100 * (ratio - 1):.0f}% higher)'
        pairs = (("mean PSNR", r["psnr_db"], p["psnr_db"]), ("SSIM", r.get("ssim"), p.get("ssim")))
        better = [
            name for name, ours, theirs in pairs
            if ours is not None and theirs is not None and (ours > theirs) != bool(p.get("beats_pca"))
        ]
        if better:
            judgement += (
                f", though its {' and '.join(better)} {'are' if len(better) > 1 else 'is'} "
                + ("lower" if p.get("beats_pca") else "higher")
                + ": the two spread their errors differently over the images"
            )
        out.append(
            f"<b>Reconstruction.</b> Test MSE {r['mse_per_pixel']:.4f} per pixel (PSNR {r['psnr_db']:.1f} dB, "
            f"SSIM {_num(r.get('ssim'), '.3f')}). PCA with the same {p['n_components']} dimensions, fitted on the "
            f"training images, gets {p['mse_per_pixel']:.4f} ({p['psnr_db']:.1f} dB, "
            f"SSIM {_num(p.get('ssim'), '.3f')}). "
            f"The model {judgement}."
        )
    g = metrics.get("generation", {})
    if g:
        out.append(
            f"<b>Samples.</b> Drawn from {_e(g['sample_source'])}, they are at Fréchet classifier distance "
            f"<b>{g['frechet_classifier_distance']:.1f}</b> from the test images (lower is better). For scale: the "
            f"model's reconstructions of those test images score {g['frechet_reconstructions']:.1f}, and as many real "
            f"training images {g['frechet_train_images']:.1f} (the noise floor of {g['images']} images)."
        )
    if g and g.get("frechet_diagonal_gaussian") is not None:
        out.append(
            f"<b>Latent structure.</b> Decoded draws from a diagonal Gaussian fitted to the training codes score "
            f"{g['frechet_diagonal_gaussian']:.1f}, decoded midpoints between two test codes "
            f"{g['frechet_midpoints']:.1f}: both stay low only if the codes fill a simple, factorised region with "
            "no holes, which is what a VAE's KL term asks for."
        )
    d = metrics.get("denoising", {})
    trained = [lv for lv in d.get("levels", []) if lv.get("trained_level")]
    if trained:
        lv = trained[0]
        out.append(
            f"<b>Denoising.</b> At its training noise level σ = {lv['noise_std']:g}, the model takes noisy test "
            f"images from {lv['psnr_noisy_db']:.1f} dB to {lv['psnr_denoised_db']:.1f} dB PSNR "
            f"({lv['gain_db']:+.1f} dB)."
        )
    rep = metrics.get("representation", {})
    if "codes" in rep:
        c, pc, px = rep["codes"], rep.get("pca"), rep.get("pixels")
        text = (
            f"<b>Codes as features.</b> A linear probe on the {c['dim']}-D codes classifies "
            f"{100 * c['linear_probe_accuracy']:.1f}% of the test images (5-NN: {100 * c['knn_accuracy']:.1f}%)"
        )
        if pc and px:
            text += (
                f"; PCA with as many dimensions: {100 * pc['linear_probe_accuracy']:.1f}% "
                f"({100 * pc['knn_accuracy']:.1f}%); raw pixels: {100 * px['linear_probe_accuracy']:.1f}% "
                f"({100 * px['knn_accuracy']:.1f}%)"
            )
        out.append(text + ".")
    v = metrics.get("variational", {})
    if v:
        out.append(
            f"<b>Likelihood.</b> Importance-weighted NLL {v['iw_nll_nats']:.1f} nats per image "
            f"({v['iw_nll_bits_per_dim']:.3f} bits/dim, K = {v['iw_samples']}) against a negative ELBO of "
            f"{v['neg_elbo_nats']:.1f}; {v['active_units']} of {v['latent_dim']} latent units are active."
        )
    s = metrics.get("sparsity", {})
    if s:
        target = s.get("target_activation")
        out.append(
            f"<b>Sparsity.</b> Mean activation {s['mean_activation']:.3f}"
            + (f" (target {target:g})" if target is not None else "")
            + f"; {100 * s['fraction_below_0.05']:.0f}% of activations are below 0.05; "
            f"{s['dead_units']} of {s['latent_dim']} units are dead."
        )
    if history and len(history) >= 2 and "test_loss" in history[-1] and "test_loss" in history[-2]:
        before, last = history[-2]["test_loss"], history[-1]["test_loss"]
        if last < before - 0.01 * abs(before):
            out.append(
                f"<b>Training.</b> The test loss was still falling in the last epoch ({before:.1f} → {last:.1f} nats "
                "per image): the model is probably undertrained; more epochs should improve these numbers."
            )
    return out
