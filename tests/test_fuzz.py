"""Mutated inputs to every loader a stranger's file reaches: each loads or raises AekitError.

Hypothesis drives the mutations (and shrinks any failure to a small reproducing case); the
mutation operators and seed files are those of ``bench/fuzz.py``, which runs 10,000 inputs.
"""

import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import fuzz  # noqa: E402

from aekit.errors import AekitError  # noqa: E402


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    out = {}
    for name, make in fuzz.TARGETS.items():
        work = tmp_path_factory.mktemp(name)
        seed_bytes, run = make(work)
        if name != "text":  # the text target's seed is text under binary names: it never loads
            run(seed_bytes)  # the unmutated seed loads
        out[name] = (seed_bytes, run)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(sorted(fuzz.TARGETS)), seed=st.integers(0, 2**32 - 1), structural=st.booleans())
def test_mutated_inputs_load_or_raise_aekit_error(targets, target, seed, structural):
    seed_bytes, run = targets[target]
    mutator = fuzz.MUTATORS.get(target, fuzz.mutate) if structural else fuzz.mutate
    data = mutator(seed_bytes, random.Random(seed))
    try:
        run(data)
    except AekitError as err:
        assert str(err) and "\n" not in str(err)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(sorted(fuzz.TARGETS)), data=st.binary(max_size=2048))
def test_arbitrary_bytes_load_or_raise_aekit_error(targets, target, data):
    try:
        targets[target][1](data)
    except AekitError as err:
        assert str(err) and "\n" not in str(err)


def test_the_harness_counts_failures_and_mutations_really_break_files():
    result = fuzz.fuzz("idx", 100, seed=3, log=lambda m: None)
    assert result["inputs"] == 100 and result["other"] == 0 and result["aekit_error"] > 50
    a = fuzz.mutate(b"0123456789" * 10, random.Random("s"))
    assert a == fuzz.mutate(b"0123456789" * 10, random.Random("s")) and a != b"0123456789" * 10
