"""Several processes under torchrun (gloo, 127.0.0.1 only): sharding, equivalence with one process, who writes,
resume, sharded evaluation. The launches are shared by module-scoped fixtures: about 40 s on two cores."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import aekit
from aekit.core import objectives
from aekit.errors import AekitError
from aekit.training.distributed import World

SRC = Path(__file__).resolve().parents[1] / "src"
TRACE_TRAIN = Path(__file__).resolve().parent / "trace_train.py"  # aekit's CLI, recording each process's images
RUN_FILES = {"config.json", "model.safetensors", "state.safetensors", "metrics.jsonl"}
# a VAE with input corruption and dynamic binarization: reparameterisation, Gaussian and Bernoulli noise all drawn
VAE = {"hidden": (64,), "latent_dim": 8, "batch_size": 200, "noise_std": 0.2, "binarize": "dynamic"}
SAE = {"hidden": (64,), "latent_dim": 8, "batch_size": 200}  # the KL sparsity penalty is a whole-batch statistic


def cli_options(options: dict) -> list[str]:
    out = []
    for name, value in options.items():
        out += [f"--{name.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return out


def torchrun(*args: str, cwd: Path, env: dict | None = None, processes: int = 2,
             trace: Path | None = None) -> subprocess.CompletedProcess:
    """``aekit ARGS`` under torchrun; with ``trace``, each process records the images it trains on there."""
    with socket.socket() as s:  # a free port on the loopback interface
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    program = ["-m", "aekit"] if trace is None else [str(TRACE_TRAIN), str(trace)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
           "--master-addr", "127.0.0.1", "--master-port", str(port), *program, *args]
    full_env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **(env or {})}
    if sys.platform.startswith("linux"):
        full_env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's own connections stay on 127.0.0.1 too
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300, check=False)


def single(family: str, out: Path, epochs: int, **options) -> aekit.Run:
    """A one-process run. By autograd, as DDP trains: aekit.fastmlp's step has the same gradients up to
    float rounding, which Adam's normalisation amplifies past the 1e-5 these comparisons hold to."""
    options.setdefault("fast_step", "off")
    return aekit.train(family, out=out, epochs=epochs, progress=False, log=None, **options)


def max_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def traced(folder: Path, rank: int) -> dict[int, list[int]]:
    rows = [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]
    return {row["epoch"]: row["indices"] for row in rows}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """One epoch of a VAE on mnist-5k in 2 processes, launched from an empty working folder."""
    root = tmp_path_factory.mktemp("ddp")
    work, trace = root / "work", root / "trace"
    work.mkdir(), trace.mkdir()
    run = torchrun("train", "--model", "vae", *cli_options(VAE), "--epochs", "1", "--out", "runs/ddp",
                   cwd=work, trace=trace)
    assert run.returncode == 0, run.stderr
    return {"root": root, "work": work, "trace": trace, "run_dir": work / "runs" / "ddp", "result": run}


def test_each_process_trains_on_its_own_half_of_every_epoch(ddp):
    first, second = traced(ddp["trace"], 0), traced(ddp["trace"], 1)
    assert first.keys() == second.keys() == {1}
    a, b = first[1], second[1]
    assert len(a) == len(b) == 2000 and len(set(a)) == 2000
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(4000))


def test_two_processes_match_one_with_the_same_global_batch(ddp, tmp_path):
    single("vae", tmp_path / "one", 1, **VAE)
    assert max_difference(ddp["run_dir"], tmp_path / "one") < 1e-5
    (ddp_row,) = [json.loads(line) for line in (ddp["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    (one_row,) = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert ddp_row["processes"] == 2 and one_row["processes"] == 1
    assert ddp_row["train_loss"] == pytest.approx(one_row["train_loss"], rel=1e-6)
    assert ddp_row["test_loss"] == pytest.approx(one_row["test_loss"], rel=1e-6)


def test_only_rank_zero_writes_and_speaks(ddp):
    work = ddp["work"]
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == sorted(
        ["runs", "runs/ddp", *(f"runs/ddp/{name}" for name in RUN_FILES)]
    )
    assert len((ddp["run_dir"] / "metrics.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in ddp["trace"].iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    assert ddp["result"].stdout.count("run folder:") == 1


def test_the_checkpoint_loads_in_one_process(ddp):
    run = aekit.load(ddp["run_dir"])
    model = run.model
    assert run.epoch == 1 and run.config.family == "vae" and run.config.train.batch_size == 200
    images = aekit.load_dataset("mnist-5k").test.images[:10]
    assert model.embed(images).shape == (10, 8)


def test_resume_under_torchrun_equals_an_uninterrupted_run(ddp, tmp_path):
    run_dir = tmp_path / "resumed"
    shutil.copytree(ddp["run_dir"], run_dir)
    trace = tmp_path / "trace"
    trace.mkdir()
    run = torchrun("train", "--resume", "--epochs", "2", "--out", str(run_dir), cwd=tmp_path, trace=trace)
    assert run.returncode == 0, run.stderr
    assert "resuming" in run.stderr and run.stderr.count("epoch 2/2") == 1
    single("vae", tmp_path / "uninterrupted", 2, **VAE)
    assert max_difference(run_dir, tmp_path / "uninterrupted") < 1e-5
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    a, b = traced(trace, 0)[2], traced(trace, 1)[2]
    assert sorted(a + b) == list(range(4000))
    # and the other way round: the DDP-trained run goes on in one process
    more = aekit.train(out=run_dir, resume=True, epochs=3, progress=False, log=None)
    assert more.epoch == 3


def test_a_batch_level_penalty_is_that_of_the_whole_batch(tmp_path):
    """SAE: the KL sparsity penalty uses the mean activation of the global batch, across the processes."""
    run = torchrun("train", "--model", "sae", *cli_options(SAE), "--epochs", "1", "--out", "ddp", "--quiet",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    single("sae", tmp_path / "one", 1, **SAE)
    # The preset's decoder reads code / rho (20x): float rounding of the all-reduced sums then shows at about
    # 1e-5. A penalty of each process's own half-batch mean differed by 7.7e-3 (measured without the scaling).
    assert max_difference(tmp_path / "ddp", tmp_path / "one") < 5e-5


def test_sharded_evaluation_equals_one_process(tmp_path):
    # unlabelled images: the representation and generation groups (rank 0 only anyway) are skipped
    digits = aekit.load_dataset("mnist-5k")
    np.save(tmp_path / "digits.npy", torch.cat([digits.train.images, digits.test.images]).numpy())
    single("vae", tmp_path / "run", 1, data=str(tmp_path / "digits.npy"), hidden=(64,), latent_dim=8, batch_size=250)
    from aekit.evaluation import evaluate_run

    one = evaluate_run(tmp_path / "run", iw_samples=20, limit=300, progress=False)
    run = torchrun("evaluate", str(tmp_path / "run"), "--iw-samples", "20", "--limit", "300", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("IW-NLL") == 2 and run.stdout.count("metrics:") == 1  # one table: rank 0's
    sharded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for group in ("reconstruction", "variational", "denoising", "pca"):
        for key, value in one[group].items():
            if isinstance(value, float):
                assert sharded[group][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (group, key)
            else:
                assert sharded[group][key] == value, (group, key)


def test_a_refusal_on_rank_zero_stops_every_process_with_one_message(ddp):
    run = torchrun("train", "--epochs", "1", "--out", "runs/ddp", "--quiet", cwd=ddp["work"])  # the run exists
    assert run.returncode != 0
    assert run.stderr.count("aekit: error:") == 1 and "already holds a run" in run.stderr
    assert len((ddp["run_dir"] / "metrics.jsonl").read_text().splitlines()) == 1  # untouched


def test_verbs_that_do_not_share_work_refuse_torchrun(tmp_path):
    run = torchrun("sample", "--pretrained", "mnist-vae", "-o", "s.png", cwd=tmp_path)
    assert run.returncode != 0
    assert run.stderr.count("aekit: error: aekit sample runs in one process") == 1
    assert not (tmp_path / "s.png").exists()


# ----- the pieces, in one process -----


def test_shards_follow_distributed_sampler():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    shards = [World(rank=r, size=3).shard(order) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # 10 padded to 12 by wrapping around
    assert sorted(torch.cat(shards).tolist()) == sorted(order.tolist() + order[:2].tolist())
    sampler = torch.utils.data.DistributedSampler(range(10), num_replicas=3, rank=1, shuffle=False)
    assert shards[1].tolist() == [order[i].item() for i in sampler]
    # the k-th local batches of all ranks together are the one-process run's k-th batch
    order = torch.randperm(4000, generator=torch.Generator().manual_seed(1))
    local = [World(rank=r, size=2).shard(order).split(100) for r in range(2)]
    for k, batch in enumerate(order.split(200)):
        assert sorted(torch.cat([local[0][k], local[1][k]]).tolist()) == sorted(batch.tolist())
    assert World().shard(order) is order


def test_noise_rows_of_the_global_batch():
    world = World(rank=1, size=2)
    x = torch.zeros(3, 1, 2, 2)
    assert world.global_shape(x) == (6, 1, 2, 2)
    whole = torch.arange(6)
    assert world.rows(whole).tolist() == [1, 3, 5]  # local row j is global row rank + size * j


def test_kl_sparsity_gradients_averaged_over_halves_equal_the_whole_batch():
    torch.manual_seed(0)
    codes = torch.rand(8, 5, requires_grad=True)
    objectives.kl_sparsity(codes, 0.05).backward()
    whole = codes.grad.clone()
    codes.grad = None
    halves = codes.detach().split(4)
    means = torch.stack([h.mean(0) for h in halves])
    for half_index in range(2):
        part = codes[half_index * 4 : (half_index + 1) * 4]
        penalty = objectives.kl_sparsity(part, 0.05, batch_mean=lambda m: means.mean(0))
        assert penalty.item() == pytest.approx(objectives.kl_sparsity(codes.detach(), 0.05).item(), rel=1e-6)
        (penalty / 2).backward()  # what DDP's average over 2 processes does
    torch.testing.assert_close(codes.grad, whole)


def test_the_global_batch_must_split_evenly():
    from aekit.api import _plan

    with pytest.raises(AekitError, match="batch-size 100 is the batch of all 3 processes"):
        _plan("ae", None, resume=False, force=False, options={"batch_size": 100}, processes=3, log=print)


def test_map_batches_in_one_process_concatenates_in_order():
    parts = World().map_batches(lambda a, b: (np.arange(a, b), np.arange(a, b) * 2.0), 7, 3)
    assert parts[0].tolist() == list(range(7)) and parts[1].tolist() == [2.0 * i for i in range(7)]
