"""Readers of the file formats images come in: IDX files, image files and folders, NumPy arrays.

Each turns a user's files into ``uint8`` arrays or :class:`~aekit.data.imageset.ImageSet` objects held in
memory, or raises a one-line :class:`~aekit.errors.AekitError`; streaming them is :mod:`aekit.data.stream`'s job.
"""
