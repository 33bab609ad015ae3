"""The baseline pipelines aekit is measured against, written here so the benchmark is self-contained.

* ``reference_epoch``: pytorch/examples' ``vae/main.py`` training loop (MLP 784-400-20, ReLU,
  Bernoulli decoder, Adam lr 1e-3, batch 128) fed by a ``DataLoader`` over a per-item
  ``Dataset`` that converts each uint8 image to a float tensor when fetched, as torchvision's
  ``ToTensor`` does.
* ``pythae_epoch``: pythae's ``VAE`` with an MLP encoder/decoder of the same shape and BCE loss,
  trained by pythae's own ``BaseTrainer`` for one epoch (when pythae is installed).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


class PerItemImages(Dataset):
    """One image at a time, converted on fetch: uint8 (H, W) -> float (1, H, W) in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self.images = images.numpy()  # (N, 1, H, W) uint8
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32) / 255.0)  # as ToTensor
        return image, 0


class ReferenceVAE(nn.Module):
    """pytorch/examples vae/main.py, layer for layer."""

    def __init__(self, hidden: int = 400, latent: int = 20, pixels: int = 784) -> None:
        super().__init__()
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, pixels)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def reference_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def reference_epoch(images: torch.Tensor, *, batch_size: int = 128, seed: int = 0, epochs: int = 1) -> list[float]:
    """Seconds per epoch of the reference pipeline."""
    torch.manual_seed(seed)
    model = ReferenceVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(PerItemImages(images), batch_size=batch_size, shuffle=True)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for data, _ in loader:
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            loss = reference_loss(recon, data, mu, logvar)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - t0)
    return times


def pythae_epoch(images: torch.Tensor, *, batch_size: int = 128, seed: int = 0, epochs: int = 1) -> list[float] | None:
    """Seconds per epoch of pythae's VAE + BaseTrainer on the same MLP shape, or None without pythae."""
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 400)
            self.mu = nn.Linear(400, 20)
            self.logvar = nn.Linear(400, 20)

        def forward(self, x):
            h = F.relu(self.fc1(x.reshape(x.shape[0], -1)))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.fc3 = nn.Linear(20, 400)
            self.fc4 = nn.Linear(400, 784)

        def forward(self, z):
            out = torch.sigmoid(self.fc4(F.relu(self.fc3(z))))
            return ModelOutput(reconstruction=out.reshape(z.shape[0], 1, 28, 28))

    import tempfile

    torch.manual_seed(seed)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce")
    model = VAE(model_config=config, encoder=Encoder(), decoder=Decoder())
    data = images.float() / 255.0
    times = []
    with tempfile.TemporaryDirectory() as out:
        trainer_config = BaseTrainerConfig(
            output_dir=out, num_epochs=epochs, learning_rate=1e-3,
            per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
            steps_saving=None, no_cuda=True, seed=seed,
        )
        dataset = BaseDataset(data, torch.zeros(len(data)))
        trainer = BaseTrainer(model=model, train_dataset=dataset, training_config=trainer_config)
        trainer.prepare_training()
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            trainer.train_step(epoch)
            times.append(time.perf_counter() - t0)
    return times
