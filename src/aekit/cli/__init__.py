"""The ``aekit`` command line: :func:`main` (the console script) and :func:`build_parser`."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
