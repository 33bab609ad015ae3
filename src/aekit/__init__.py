"""aekit: image autoencoders (AE, DAE, SAE, VAE) that are fast and easy to measure.

>>> import aekit
>>> run = aekit.train("vae", data="mnist-5k", epochs=1)                           # doctest: +SKIP
>>> codes = run.model.embed(aekit.load_dataset("mnist-5k").test.images)          # doctest: +SKIP
"""

from . import pretrained  # callable: aekit.pretrained("mnist-vae")
from ._version import __version__
from .api import train
from .core.config import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, preset
from .core.model import Autoencoder
from .data import ImageSet, Splits, load_dataset, load_images
from .errors import AekitError
from .evaluation import evaluate
from .export import export_onnx
from .run import Run, load

__all__ = [
    "AekitError",
    "Autoencoder",
    "DataConfig",
    "ImageSet",
    "ModelConfig",
    "ObjectiveConfig",
    "Run",
    "RunConfig",
    "Splits",
    "TrainConfig",
    "__version__",
    "evaluate",
    "export_onnx",
    "load",
    "load_dataset",
    "load_images",
    "preset",
    "pretrained",
    "train",
]
