import platform
import subprocess
import sys

import pytest
import torch

from aekit.cpu import tune_cpu

# One IW-NLL chunk's worth of allocations: decode 2048 latents to 784 logits and score them.
WORKLOAD = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from aekit.cpu import tune_cpu
    tune_cpu()
torch.set_num_threads(1)
w1, w2 = torch.randn(20, 400), torch.randn(400, 784)
def chunk():
    logits = (torch.randn(2048, 20) @ w1).relu_() @ w2
    return (torch.nn.functional.softplus(logits) - logits * 0.5).sum(-1)
for _ in range(5):
    chunk()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    chunk()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _steady_state_page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's mallopt")
def test_tuned_process_reuses_freed_blocks_instead_of_faulting_them_in_again():
    untuned, tuned = _steady_state_page_faults("untuned"), _steady_state_page_faults("tuned")
    if untuned < 10_000:
        pytest.skip(f"this glibc already keeps freed blocks ({untuned} page faults untuned)")
    # glibc's defaults hand the freed blocks back to the kernel (about 90,000 faults on a quiet machine); tuned,
    # none. Under memory pressure the kernel may reclaim pages of either process, so leave a wide margin.
    assert tuned < untuned / 3, (tuned, untuned)


def test_flush_denormal_is_on_after_tuning():
    tune_cpu()
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
    assert float(tiny * 1.0) == 0.0


# The OpenMP pool already exists (a parallel operation ran) when flush-to-zero is asked for: torch's own
# call sets it in this thread only, and the worker's half of a parallel operation keeps its denormals.
DENORMALS = """
import sys, torch
torch.set_num_threads(2)
x = torch.full((1 << 20,), 1e-39)  # denormal floats, enough for the work to be split between threads
(x * 1.0).sum()
torch.set_flush_denormal(True)
main_only = int((x * 1.0).count_nonzero())
from aekit.cpu import tune_cpu
tune_cpu()
print(main_only, int((x * 1.0).count_nonzero()))
"""


@pytest.mark.skipif("OpenMP" not in torch.__config__.parallel_info(), reason="torch does not run on OpenMP here")
def test_flush_to_zero_reaches_the_worker_threads_too():
    out = subprocess.run([sys.executable, "-c", DENORMALS], capture_output=True, text=True, check=True)
    main_only, everywhere = map(int, out.stdout.split())
    assert main_only > 0  # what torch.set_flush_denormal alone leaves: the worker's denormals
    assert everywhere == 0
