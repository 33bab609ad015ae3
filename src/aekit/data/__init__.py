"""Image data for aekit: named datasets, image folders, array files and downloads.

Every loader returns ``uint8`` images shaped ``(N, C, H, W)`` in an
:class:`ImageSet`, and raises :class:`aekit.errors.AekitError` for any problem
with the user's files or options.
"""

from aekit.data.imageset import ImageSet, Splits, conform, to_uint8_images
from aekit.data.sources import DATASETS, default_data_dir, load_dataset, load_images

__all__ = [
    "DATASETS",
    "ImageSet",
    "Splits",
    "conform",
    "default_data_dir",
    "load_dataset",
    "load_images",
    "to_uint8_images",
]
