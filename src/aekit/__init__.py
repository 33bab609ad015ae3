"""aekit: image autoencoders (AE, DAE, SAE, VAE) that are fast and easy to measure.

>>> import aekit
>>> model = aekit.train("vae", data="mnist-5k", epochs=1)      # doctest: +SKIP
>>> codes = model.embed(aekit.load_dataset("mnist-5k").test.images)   # doctest: +SKIP
"""

__version__ = "0.1.0"

from . import pretrained  # callable: aekit.pretrained("mnist-vae")
from .run import load
from .core.config import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, preset
from .data import ImageSet, Splits, load_dataset, load_images
from .errors import AekitError
from .evaluate import evaluate
from .export import export_onnx
from .core.model import Autoencoder
from .training.loop import train

__all__ = [
    "AekitError",
    "Autoencoder",
    "DataConfig",
    "ImageSet",
    "ModelConfig",
    "ObjectiveConfig",
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
