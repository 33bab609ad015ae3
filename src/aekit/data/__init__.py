"""Image data for aekit: named datasets, image folders, array files and downloads.

Every loader returns ``uint8`` images shaped ``(N, C, H, W)`` in an
:class:`ImageSet` (held in memory, or streamed from disk: see its contract), and
raises :class:`aekit.errors.AekitError` for any problem with the user's files or
options.

=================  ================================================================
module             job
=================  ================================================================
``imageset``       ImageSet, Splits, the conversions (to_uint8_images, conform, ...)
``load``           load_dataset / load_images: what a spec names, read and converted
``datasets``       the named datasets (MNIST, Fashion-MNIST, mnist-5k), their folder
``formats``        readers of IDX files, image files and folders, NumPy arrays
``stream``         sets larger than memory, read per batch
``download``       mirrors, checksums, verified downloads
``machine``        memory available, processes sharing this machine
=================  ================================================================
"""

from aekit.data.datasets import DATASETS, default_data_dir
from aekit.data.imageset import CHANNELS, ImageSet, Splits, conform, to_uint8_images, to_unit
from aekit.data.load import load_dataset, load_images

__all__ = [
    "CHANNELS",
    "DATASETS",
    "ImageSet",
    "Splits",
    "conform",
    "default_data_dir",
    "load_dataset",
    "load_images",
    "to_uint8_images",
    "to_unit",
]
