"""Mutated inputs to every loader a stranger's file reaches: each loads or raises AekitError.

The same harness as ``bench/fuzz.py`` (which runs 10,000 inputs); here 200 per loader.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import fuzz  # noqa: E402


@pytest.mark.parametrize("target", sorted(fuzz.TARGETS))
def test_mutated_inputs_load_or_raise_aekit_error(target):
    result = fuzz.fuzz(target, 200, seed=7, log=lambda m: None)
    assert result["inputs"] == 200
    assert result["other"] == 0, result["failures"][:5]
    assert result["aekit_error"] > 0  # the mutations really do break files


def test_mutations_are_reproducible():
    import random

    a = fuzz.mutate(b"0123456789" * 10, random.Random("s"))
    b = fuzz.mutate(b"0123456789" * 10, random.Random("s"))
    assert a == b and a != b"0123456789" * 10
