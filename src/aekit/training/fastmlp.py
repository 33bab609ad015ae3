"""A hand-written training step for MLP autoencoders: forward, backward and Adam, without autograd.

At batch 128 the reference VAE (784-400-20) spends, under autograd, about as long in bookkeeping as in its
matrix multiplies (docs/performance.md has the measurements): graph nodes, dozens of µs-sized element-wise
kernels, fresh allocations for every activation and gradient, and the optimizer's Python side. For an
MLP the backward pass is short enough to write out. This step

* keeps every activation and gradient in buffers allocated once per batch size (``out=`` kernels);
* writes the gradients straight into each parameter's ``.grad`` (so clipping and the optimizer's
  state are the usual ones, and checkpoints and resume do not know which step ran);
* calls the fused Adam kernel on those lists directly when the optimizer is a fused Adam.

It computes what autograd computes for :func:`aekit.core.objectives.loss_with_noise` (``tests/test_fastmlp.py``
compares the two on every supported combination): the MLP backbones with ReLU, leaky ReLU or tanh,
point codes (optionally sigmoid, with L1 or KL sparsity) or a diagonal Gaussian posterior, Bernoulli or
Gaussian likelihood, any input corruption. :func:`supports` says why anything else is not, and the
training loop then uses autograd.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.latent import LOGVAR_RANGE
from ..core.likelihoods import LIKELIHOODS, bernoulli_nll, gaussian_nll
from ..core.nets import LEAKY_SLOPE, MLPDecoder, MLPEncoder
from ..core.objectives import KL_SPARSITY_EPS, apply_corruption, kl_sparsity, l1_sparsity

_aten = torch.ops.aten

ANY = None  # any value of the field: the step reads it as it is
# What this step implements, field by field. Every field of the model's and the objective's configs must be
# listed with the values it handles: a value not listed, or a field added to a config since, fails closed
# (supports() gives the reason and the run trains by autograd) instead of training with wrong gradients.
MODEL_FIELDS: dict[str, tuple | None] = {
    "arch": ("mlp",), "activation": ("relu", "leaky_relu", "tanh"), "latent": ("point", "gaussian"),
    "code_activation": ("none", "sigmoid"), "channels": ANY, "height": ANY, "width": ANY, "latent_dim": ANY,
    "hidden": ANY, "code_scale": ANY, "blocks": (1,), "latent_channels": (0,), "downsample": (0,), "outputs": (1,),
    "patch": ANY, "pca_path": (False,), "noise_level_input": (False,),
}
OBJECTIVE_FIELDS: dict[str, tuple | None] = {
    "likelihood": ("bernoulli", "gaussian"), "gaussian_std": ANY, "beta": ANY, "importance_samples": (1,),
    "noise_std": ANY, "noise_std_min": ANY, "noise_clip": (True,), "mask_prob": ANY, "salt_pepper": ANY,
    "sparsity": ("none", "l1", "kl"), "sparsity_weight": ANY, "sparsity_target": ANY,
    "kl_warmup": (0,), "free_bits": (0.0,), "lmbda": (None,), "distortion": ("mse",),
}
LIKELIHOOD_FUNCTIONS = {"bernoulli": bernoulli_nll, "gaussian": gaussian_nll}  # the functions written out below


def supports(model: nn.Module, objective, optimizer: torch.optim.Optimizer | None = None) -> str | None:
    """Why this step cannot train ``model`` on ``objective`` with ``optimizer`` (``None``: it can, exactly as
    autograd would). The one place that decides it: the training loop asks here and nowhere else."""
    for part, fields in ((model.config, MODEL_FIELDS), (objective, OBJECTIVE_FIELDS)):
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if f.name not in fields:
                return f"the option {f.name}"
            allowed = fields[f.name]
            if allowed is not ANY and value not in allowed:
                return f"{f.name} {value!r}"
    if LIKELIHOODS[objective.likelihood].nll is not LIKELIHOOD_FUNCTIONS[objective.likelihood]:
        return f"the {objective.likelihood} likelihood as registered now"
    if not (isinstance(model.encoder, MLPEncoder) and isinstance(model.decoder, MLPDecoder)):
        return "backbones other than aekit's MLPs"
    first = next(model.parameters())
    if first.device.type != "cpu" or first.dtype != torch.float32:
        return "parameters not float32 on the CPU"
    if any(not p.requires_grad for p in model.parameters()):
        return "frozen parameters"
    if optimizer is not None and len(optimizer.param_groups) != 1:
        return "several parameter groups"
    return None


class MLPStep:
    """``step(x, noise) -> (loss, recon, kl, sparsity)``: one forward, backward and optimizer update.

    ``x``: clean images (B, C, H, W) in [0, 1]; ``noise``: the step's draws from
    :func:`aekit.core.objectives.draw_noise`. The gradients land in each parameter's ``.grad``
    (overwritten, never accumulated); :meth:`gradients` stops there, :meth:`update` clips them
    (``grad_clip``) and applies the optimizer; calling the step does both.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, objective, *, grad_clip: float = 0.0) -> None:
        reason = supports(model, objective, optimizer)
        if reason is not None:
            raise ValueError(f"the hand-written MLP step does not support {reason}")
        self.model, self.optimizer, self.objective, self.grad_clip = model, optimizer, objective, grad_clip
        config = model.config
        self.activation = config.activation
        self.latent_dim = config.latent_dim
        self.code_scale = config.code_scale
        self.variational = config.latent == "gaussian"
        self.sigmoid_codes = not self.variational and config.code_activation == "sigmoid"
        if self.variational:
            # The mean and log-variance heads run as one (2D, F) layer: one matmul each way instead of two.
            # Its weights are gathered from the two each step; its gradients are the two's .grad (views).
            mean, logvar = model.head.mean, model.head.logvar
            d, f = self.latent_dim, mean.in_features
            weight, bias, weight_grad, bias_grad = torch.empty(2 * d, f), torch.empty(2 * d), torch.zeros(2 * d, f), torch.zeros(2 * d)
            mean.weight.grad, logvar.weight.grad = weight_grad[:d], weight_grad[d:]
            mean.bias.grad, logvar.bias.grad = bias_grad[:d], bias_grad[d:]
            self._head_parts = ([mean.weight.detach(), logvar.weight.detach()], [mean.bias.detach(), logvar.bias.detach()])
        self.params = list(model.parameters())
        for p in self.params:  # written in place by every step
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in self.params]
        self.encoder = [_Layer.of(m) for m in model.encoder.net if isinstance(m, nn.Linear)]
        self.decoder = [_Layer.of(m) for m in model.decoder.net if isinstance(m, nn.Linear)]
        if self.variational:
            self.head = _Layer(weight, bias, weight.t(), weight_grad, bias_grad, 2 * d)
        else:
            self.head = _Layer.of(model.head.linear)
        self._buffers: dict[int, dict[str, torch.Tensor]] = {}
        self._fused = _fused_adam_state(optimizer, self.params)
        self._state: tuple | None = None  # the optimizer's state tensors, as lists

    # ----- buffers -----

    def _buf(self, batch: int) -> dict[str, torch.Tensor]:
        """Activations and their gradients for a batch size, allocated once."""
        bufs = self._buffers.get(batch)
        if bufs is None:
            new = lambda n: torch.empty(batch, n)  # noqa: E731
            bufs = {"head": new(self.head.width), "dhead": new(self.head.width), "pixels": new(self.decoder[-1].width)}
            for i, layer in enumerate(self.encoder):
                bufs[f"e{i}"], bufs[f"de{i}"] = new(layer.width), new(layer.width)
            for name in ("code", "dcode", "logvar", "std", "z", "t", "u", "scaled"):
                bufs[name] = new(self.latent_dim)
            for i, layer in enumerate(self.decoder):
                bufs[f"d{i}"], bufs[f"dd{i}"] = new(layer.width), new(layer.width)
            self._buffers = {batch: bufs}  # the full-batch size and the epoch's last, smaller one alternate rarely
        return bufs

    # ----- the step -----

    def __call__(self, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> dict[str, float]:
        terms = self.gradients(x, noise)
        self.update()
        return terms

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss terms of the batch (floats); the loss's gradient in every parameter's ``.grad``."""
        objective = self.objective
        batch, d = x.shape[0], self.latent_dim
        buf = self._buf(batch)
        inputs = apply_corruption(x, noise, noise_std=objective.noise_std, mask_prob=objective.mask_prob,
                                  salt_pepper=objective.salt_pepper)
        target = x.reshape(-1)  # (B * pixels,)

        # Forward: encoder, latent, decoder; every activation kept for the backward pass.
        h = inputs.reshape(batch, -1)
        enc_in = [h]
        for i, layer in enumerate(self.encoder):
            h = self._act(torch.addmm(layer.bias, h, layer.weight_t, out=buf[f"e{i}"]))
            enc_in.append(h)
        head = self.head
        if self.variational:
            torch.cat(self._head_parts[0], out=head.weight)
            torch.cat(self._head_parts[1], out=head.bias)
            both = torch.addmm(head.bias, h, head.weight_t, out=buf["head"])
            mu, raw = both[:, :d], both[:, d:]
            logvar = torch.clamp(raw, *LOGVAR_RANGE, out=buf["logvar"])
            std = torch.mul(logvar, 0.5, out=buf["std"]).exp_()
            code = torch.addcmul(mu, std, noise["eps"], out=buf["z"])  # z = mu + sigma eps
            var = torch.mul(std, std, out=buf["t"])  # exp(logvar)
            # KL = -1/2 sum(1 + logvar - mu^2 - var), per image, then the batch mean
            kl_sum = torch.sub(var, logvar, out=buf["u"]).addcmul_(mu, mu).sum().item()
            kl = (kl_sum - mu.numel()) * (0.5 / batch)
        else:
            code = torch.addmm(head.bias, h, head.weight_t, out=buf["head"])
            if self.sigmoid_codes:
                code = torch.sigmoid(code, out=buf["code"])
        code_scale = self.code_scale
        g = code if code_scale == 1.0 else torch.mul(code, code_scale, out=buf["scaled"])  # what the decoder reads
        dec_in = [g]
        last = len(self.decoder) - 1
        for i, layer in enumerate(self.decoder[:-1]):
            g = self._act(torch.addmm(layer.bias, g, layer.weight_t, out=buf[f"d{i}"]))
            dec_in.append(g)

        # The last layer, the likelihood and its gradient with respect to the logits, up to a factor `scale`
        # that the next matmuls apply for free (their alpha).
        out_layer, dlogits = self.decoder[-1], buf[f"dd{last}"]
        if objective.likelihood == "bernoulli":
            # sum(softplus(l) - x l), gradient sigmoid(l) - x. The matmul writes -l (beta = alpha = -1), and
            # softplus(l) = -log sigmoid(-l): one cheap log beside the sigmoid the gradient needs, instead
            # of softplus's slow kernel.
            neg = torch.addmm(out_layer.bias, g, out_layer.weight_t, beta=-1, alpha=-1, out=buf[f"d{last}"])
            u = torch.sigmoid(neg, out=dlogits)  # sigmoid(-l) = 1 - sigmoid(l)
            nats = torch.log(u, out=buf["pixels"]).sum().item()
            if not math.isfinite(nats):  # sigmoid(-l) underflowed (l > 87): the exact form
                nats = -F.softplus(-neg).sum().item()
            recon = (torch.dot(neg.view(-1), target).item() - nats) / batch
            delta, scale = u.add_(target.view(batch, -1)).sub_(1.0), -1.0 / batch  # u + x - 1 = -(sigmoid(l) - x)
        else:  # "gaussian" (supports() admits no other): 1/2 ((x - m) / s)^2 + log s + 1/2 log 2 pi, m = sigmoid(l);
            # gradient (m - x) m (1 - m) / s^2
            s = objective.gaussian_std
            logits = torch.addmm(out_layer.bias, g, out_layer.weight_t, out=buf[f"d{last}"])
            m = torch.sigmoid(logits, out=buf["pixels"])
            diff = torch.sub(m, target.view(batch, -1), out=dlogits)
            recon = (0.5 / s**2) * torch.dot(diff.view(-1), diff.view(-1)).item() / batch \
                + (math.log(s) + 0.5 * math.log(2 * math.pi)) * dlogits.shape[1]
            delta, scale = diff.mul_(m).mul_(m.neg_().add_(1.0)), 1.0 / (s**2 * batch)

        # Backward through the decoder, to the code.
        delta = _linear_backward(out_layer, delta, dec_in[last], scale, buf[f"dd{last - 1}"] if last else buf["dcode"])
        for i in range(last - 1, -1, -1):
            delta = _linear_backward(self.decoder[i], self._act_backward(delta, dec_in[i + 1]), dec_in[i], 1.0,
                                     buf[f"dd{i - 1}"] if i else buf["dcode"])
        dcode = delta if code_scale == 1.0 else delta.mul_(code_scale)

        # Through the latent (and its penalties) to the encoder's features.
        beta, weight = objective.beta, objective.sparsity_weight
        if self.variational:
            # d/dmu: the decoder's gradient + beta mu / B; d/dlogvar: dz eps std / 2 + beta (var - 1) / (2 B)
            dboth = buf["dhead"]
            torch.add(dcode, mu, alpha=beta / batch, out=dboth[:, :d])
            dlogvar = torch.mul(dcode, noise["eps"], out=dboth[:, d:]).mul_(std).mul_(0.5)
            dlogvar.add_(var.sub_(1.0), alpha=0.5 * beta / batch)
            _aten.hardtanh_backward.grad_input(dlogvar, raw, *LOGVAR_RANGE, grad_input=dlogvar)  # none outside the clamp
            sparsity = 0.0
        else:
            dboth, sparsity = self._sparsity(code, dcode, batch)
            if self.sigmoid_codes:
                dboth = dboth.mul_(code).mul_(torch.sub(1.0, code, out=buf["t"]))  # sigmoid'
            kl = 0.0
        n_enc = len(self.encoder)
        delta = _linear_backward(head, dboth, enc_in[-1], 1.0, buf[f"de{n_enc - 1}"])

        # Backward through the encoder (no gradient for the input itself).
        for i in range(n_enc - 1, -1, -1):
            delta = _linear_backward(self.encoder[i], self._act_backward(delta, enc_in[i + 1]), enc_in[i], 1.0,
                                     buf[f"de{i - 1}"] if i else None)

        loss = recon + beta * kl + weight * sparsity
        return {"loss": loss, "recon": recon, "kl": kl, "sparsity": sparsity}  # Python floats

    def _sparsity(self, code: torch.Tensor, dcode: torch.Tensor, batch: int) -> tuple[torch.Tensor, float]:
        """The sparsity penalty of the codes (objectives.py's value) and its gradient added to ``dcode``."""
        objective = self.objective
        weight = objective.sparsity_weight
        if objective.sparsity == "l1":  # mean over images of sum |code|
            dcode.add_(torch.sign(code), alpha=weight / batch)
            return dcode, l1_sparsity(code).mean().item()
        if objective.sparsity == "kl":  # sum_j KL(rho || rho_hat_j), rho_hat the batch mean of unit j
            eps, rho = KL_SPARSITY_EPS, objective.sparsity_target
            raw = code.mean(0)
            rho_hat = raw.clamp(eps, 1 - eps)
            grad = (-rho / rho_hat + (1 - rho) / (1 - rho_hat)) * ((raw >= eps) & (raw <= 1 - eps))
            dcode.add_(grad, alpha=weight / batch)  # (D,) broadcast over the batch: d rho_hat_j / d code_ij = 1/B
            return dcode, kl_sparsity(code, rho).item()
        return dcode, 0.0  # "none" (supports() admits no other)

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return h.clamp_min_(0.0)
        if self.activation == "leaky_relu":
            return F.leaky_relu_(h, LEAKY_SLOPE)
        return h.tanh_()

    def _act_backward(self, d: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``d`` (gradient w.r.t. the activation's output ``out``) -> gradient w.r.t. its input, in place.

        ATen's own backward kernels, in their ``out=`` form: one pass, where ``d.mul_(out > 0)`` makes
        three (the mask, its conversion to float, the product)."""
        if self.activation == "relu":
            return _aten.threshold_backward.grad_input(d, out, 0.0, grad_input=d)
        if self.activation == "leaky_relu":  # its result has the sign of its input
            return _aten.leaky_relu_backward.grad_input(d, out, LEAKY_SLOPE, True, grad_input=d)
        return _aten.tanh_backward.grad_input(d, out, grad_input=d)

    # ----- the update -----

    def update(self) -> None:
        """Clip the gradients (``grad_clip`` > 0) and apply the optimizer to them."""
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self._fused is None:
            self.optimizer.step()
            return
        first = self.optimizer.state.get(self.params[0])
        if not first:  # the first step creates the state; the optimizer does that its own way
            self.optimizer.step()
            return
        if self._state is None or self._state[0] is not first:  # (again if a state was loaded since)
            state = [self.optimizer.state[p] for p in self.params]
            self._state = (first, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
                           [s["step"] for s in state])
        _, exp_avgs, exp_avg_sqs, steps = self._state
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(self.params, self.grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                           lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                           eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)


class _Layer(NamedTuple):
    """A linear layer's tensors, looked up once (``nn.Module`` attribute access costs a µs each)."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,)
    weight_t: torch.Tensor  # (in, out): a view of weight
    weight_grad: torch.Tensor
    bias_grad: torch.Tensor
    width: int  # out

    @classmethod
    def of(cls, linear: nn.Linear) -> _Layer:
        w, b = linear.weight, linear.bias
        return cls(w.detach(), b.detach(), w.detach().t(), w.grad, b.grad, linear.out_features)


def _linear_backward(layer: _Layer, delta: torch.Tensor, inputs: torch.Tensor, scale: float,
                     out: torch.Tensor | None) -> torch.Tensor | None:
    """Gradients of ``y = inputs W^T + b`` given ``scale * delta`` = d loss / d y: W's and b's into
    their ``.grad``, the inputs' into ``out`` (returned; skipped when ``out`` is None)."""
    if scale == 1.0:
        torch.mm(delta.t(), inputs, out=layer.weight_grad)
        torch.sum(delta, 0, out=layer.bias_grad)
        return None if out is None else torch.mm(delta, layer.weight, out=out)
    torch.addmm(layer.weight_grad, delta.t(), inputs, beta=0, alpha=scale, out=layer.weight_grad)
    torch.sum(delta, 0, out=layer.bias_grad).mul_(scale)
    return None if out is None else torch.addmm(out, delta, layer.weight, beta=0, alpha=scale, out=out)


def _fused_adam_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> bool | None:
    """True when the optimizer is a plain fused Adam over exactly ``params`` (its kernel is then called
    directly, skipping the optimizer's Python side); ``None`` to call ``optimizer.step()``."""
    if type(optimizer) is not torch.optim.Adam or not hasattr(torch, "_fused_adam_"):
        return None
    group = optimizer.param_groups[0]
    if not group.get("fused") or group.get("amsgrad") or group.get("maximize") or group.get("capturable") \
            or group.get("decoupled_weight_decay") or group.get("differentiable") or isinstance(group["lr"], torch.Tensor):
        return None
    if [id(p) for p in group["params"]] != [id(p) for p in params]:
        return None
    return True
