"""Careless and hostile use (issue 18): two writers on one run folder, outputs that cannot be written, requests
too large for memory, out-of-range values, a closed pipe, docs that promise what the CLI does, and the wording
of messages. Each numbered case of the issue has its test here; every failure is one line and exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aekit
from aekit.cli import main
from aekit.errors import AekitError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "16", "--latent-dim", "4", "--batch-size", "500", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *patterns):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for pattern in patterns:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def aekit_process(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aekit", *map(str, args)], env=env(), text=True, **kwargs)


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("misuse") / "vae"
    assert main(["train", "--model", "vae", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


# ----- 1. one writer per run folder -----


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_two_trainings_racing_into_one_folder_one_wins_and_the_folder_is_whole(tmp_path):
    """Two rounds of bench/race_test.py (the benchmark runs 20): either order of start."""
    sys.path.insert(0, str(REPO / "bench"))
    import race_test

    for i, order in enumerate((("ae", "vae"), ("vae", "ae"))):
        result = race_test.one_round(tmp_path / f"round{i}", *order, epochs=3)
        assert result["problems"] == [], result
        assert "being written by process" in result["refusal"] or "already holds a run" in result["refusal"]


def test_a_second_writer_is_refused_while_training_and_readers_keep_working(tmp_path):
    out = tmp_path / "run"
    first = aekit_process("train", "--model", "ae", *TINY, "--batch-size", "8", "--epochs", "100000", "--out", out,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(out / "model.safetensors", timeout=120)  # an epoch done: readers have a model
        second = subprocess.run([sys.executable, "-m", "aekit", "train", "--model", "ae", *TINY, "--epochs", "1",
                                 "--out", str(out), "--force"], env=env(), capture_output=True, text=True, timeout=120)
        evaluate = subprocess.run([sys.executable, "-m", "aekit", "evaluate", str(out), "--limit", "20", "--quiet"],
                                  env=env(), capture_output=True, text=True, timeout=120)
        info = subprocess.run([sys.executable, "-m", "aekit", "info", str(out)], env=env(), capture_output=True,
                              text=True, timeout=120)
    finally:
        first.send_signal(2)  # stop it cleanly: a mid-epoch checkpoint
        first.communicate(timeout=120)
    for refused in (second, evaluate):
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"being written by process {first.pid} (aekit train)" in refused.stderr
    assert info.returncode == 0 and "family      ae" in info.stdout, info.stderr
    assert not (out / "metrics.json").exists() and (out / "state.safetensors").exists()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".aekit-lock").write_text("999999999\n")  # a dead writer's file: the kernel dropped its lock
    code, _, err = run(capsys, "train", "--model", "ae", *TINY, "--epochs", "1", "--out", out)
    assert code == 0, err
    assert not (out / ".aekit-lock").exists()


def test_evaluate_and_report_refuse_a_folder_another_process_writes(vae, capsys):
    from aekit.files import RunLock

    with RunLock(vae, "a test"):
        for verb in ("evaluate", "report"):
            code, _, err = run(capsys, verb, vae, "--quiet", "--limit", "20")
            one_line_error(code, err, rf"being written by process {os.getpid()}")
        code, out, err = run(capsys, "info", vae)  # readers are not locked out
        assert code == 0 and "family" in out


def test_the_lock_is_released_when_training_fails(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--model", "ae", *TINY, "--epochs", "1", "--data", tmp_path / "none",
                       "--out", out)
    one_line_error(code, err, "neither a dataset")
    assert not out.exists()  # nothing created by a run that never started
    code, _, err = run(capsys, "train", "--model", "ae", *TINY, "--epochs", "1", "--out", out)
    assert code == 0, err


# ----- 2. every output is checked before the work -----


def test_evaluate_report_and_compare_check_their_outputs_before_computing(vae, tmp_path, capsys, monkeypatch):
    from aekit import evaluation

    def never(*args, **kwargs):
        raise AssertionError("computed metrics before checking the output")

    monkeypatch.setattr(evaluation, "evaluate", never)
    (vae / "metrics.json").unlink(missing_ok=True)
    code, _, err = run(capsys, "compare", vae, vae, "-o", tmp_path / "missing" / "table.md", "--quiet")
    one_line_error(code, err, "missing")
    blocked = tmp_path / "blocked"
    import shutil

    shutil.copytree(vae, blocked)
    (blocked / "metrics.json").mkdir()  # metrics.json cannot be written: a folder is in its way
    code, _, err = run(capsys, "evaluate", blocked, "--quiet")
    one_line_error(code, err, "metrics.json")
    (blocked / "metrics.json").rmdir()
    (blocked / "report.html").mkdir()
    code, _, err = run(capsys, "report", blocked, "--quiet")
    one_line_error(code, err, "report.html")


def test_a_folder_that_refuses_new_files_is_found_before_the_work(vae, tmp_path, capsys, monkeypatch):
    from aekit import evaluation, files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("computed before the check"))
    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)  # a read-only mount (chmod does not stop root)
    code, _, err = run(capsys, "evaluate", vae, "--quiet")
    one_line_error(code, err, "Permission denied")
    code, _, err = run(capsys, "sample", vae, "-n", "4", "-o", tmp_path / "s.png")
    one_line_error(code, err, "Permission denied")


def test_evaluate_prints_its_table_even_when_the_final_write_fails(vae, capsys, monkeypatch):
    from aekit.metrics import store

    def full(*args, **kwargs):
        raise AekitError("cannot write metrics.json: No space left on device")

    monkeypatch.setattr(store, "atomic_write_json", full)
    code, out, err = run(capsys, "evaluate", vae, "--quiet", "--limit", "30", "--iw-samples", "2")
    assert "PSNR" in out  # the table the user waited for
    one_line_error(code, err, "No space left")


def test_train_checks_the_free_disk_before_it_starts(tmp_path, capsys, monkeypatch):
    import shutil

    from aekit import files

    real = shutil.disk_usage
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    code, _, err = run(capsys, "train", "--model", "ae", *TINY, "--epochs", "1", "--out", tmp_path / "run")
    one_line_error(code, err, "free", "needs about")
    assert not (tmp_path / "run").exists()


# ----- 3. every size a user asks for is checked against a memory budget -----


def test_a_huge_sample_request_is_refused_before_allocating(vae, tmp_path, capsys):
    t0 = time.perf_counter()
    code, _, err = run(capsys, "sample", vae, "-n", "100000000", "-o", tmp_path / "x.npy")
    line = one_line_error(code, err, "memory budget", "AEKIT_MEMORY_BUDGET")
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "x.npy").exists(), line
    code, _, err = run(capsys, "sample", vae, "-n", "5000", "-o", tmp_path / "x.png")
    one_line_error(code, err, "grid", ".npy")


def test_the_budget_can_be_raised_and_lowered(vae, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AEKIT_MEMORY_BUDGET", "1K")
    code, _, err = run(capsys, "sample", vae, "-n", "64", "-o", tmp_path / "x.npy")
    one_line_error(code, err, "1.0 KiB")
    monkeypatch.setenv("AEKIT_MEMORY_BUDGET", "lots")
    code, _, err = run(capsys, "sample", vae, "-n", "4", "-o", tmp_path / "x.npy")
    one_line_error(code, err, "AEKIT_MEMORY_BUDGET")
    monkeypatch.setenv("AEKIT_MEMORY_BUDGET", "2G")
    code, _, err = run(capsys, "sample", vae, "-n", "64", "-o", tmp_path / "x.npy")
    assert code == 0, err


def test_importance_samples_times_images_are_budgeted(vae, capsys, monkeypatch):
    monkeypatch.setenv("AEKIT_MEMORY_BUDGET", "64M")
    code, _, err = run(capsys, "evaluate", vae, "--iw-samples", "100000000", "--quiet")
    one_line_error(code, err, "memory budget")


def test_an_allocator_failure_is_one_line(vae, tmp_path, capsys, monkeypatch):
    from aekit.core.model import Autoencoder

    def boom(self, n, seed=0, size=None, source=None):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 313600000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(Autoencoder, "sample", boom)
    code, _, err = run(capsys, "sample", vae, "-n", "8", "-o", tmp_path / "x.npy")
    one_line_error(code, err, "out of memory")


# ----- 4. non-finite and out-of-range values -----


@pytest.mark.parametrize("argv, pattern", [
    (["train", "--lr", "inf"], "lr must be"),
    (["train", "--lr", "nan"], "lr must be"),
    (["train", "--noise-std", "5"], "noise_std must be"),
    (["denoise", "RUN", "mnist-5k", "--noise-std", "1e9", "-o", "OUT"], "noise-std must be"),
    (["denoise", "RUN", "mnist-5k", "--noise-std", "nan", "-o", "OUT"], "noise-std must be"),
    (["sample", "RUN", "-n", "0", "-o", "OUT.npy"], "-n must be"),
    (["evaluate", "RUN", "--iw-samples", "inf"], "iw-samples"),
    (["serve", "RUN", "--port", "70000"], "port must be"),
])
def test_out_of_range_values_are_refused_before_anything_runs(vae, tmp_path, capsys, argv, pattern):
    argv = [str(vae) if a == "RUN" else str(tmp_path / a) if a.startswith("OUT") else a for a in argv]
    if argv[0] == "train":
        argv += [*TINY, "--epochs", "1", "--out", str(tmp_path / "run")]
    code, _, err = run(capsys, *argv)
    one_line_error(code, err, pattern)
    assert not (tmp_path / "run").exists() and not (tmp_path / "OUT").exists()


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    config = aekit.preset("ae", epochs=2, hidden=(16,), latent_dim=4, batch_size=500)
    config.train.lr = 1e12  # past the range: the quickest way to a diverging run
    with pytest.raises(AekitError, match="diverged"):
        aekit.train(config, out=tmp_path / "run", progress=False, log=None)
    assert not (tmp_path / "run").exists()  # a rerun is not refused, and no half-run is left to confuse info


def test_info_on_a_run_killed_before_its_first_epoch_says_so(vae, tmp_path, capsys):
    (tmp_path / "young").mkdir()
    (tmp_path / "young" / "config.json").write_bytes((vae / "config.json").read_bytes())
    code, _, err = run(capsys, "info", tmp_path / "young")
    one_line_error(code, err, "not finished an epoch", "--resume")


# ----- 5. a closed output stream never stops a training -----


def test_a_closed_pipe_does_not_stop_training(tmp_path):
    out = tmp_path / "run"
    proc = aekit_process("train", "--model", "ae", "--hidden", "16", "--latent-dim", "4", "--batch-size", "100",
                         "--epochs", "4", "--out", out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.stdout.readline()  # like `| head -1`: one line, then the reader goes away
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


# ----- 6. the docs promise what the CLI does -----


def test_every_verb_the_readme_says_takes_pretrained_takes_it(tmp_path, capsys):
    readme = (REPO / "README.md").read_text()
    claim = re.search(r"Every verb that (?:reads|takes) a run[^.]*\(([^)]*)\)[^.]*takes `--pretrained NAME`", readme)
    assert claim, "the README says which verbs take --pretrained"
    verbs = re.findall(r"`(\w+)`", claim.group(1))
    assert set(verbs) >= {"info", "encode", "sample", "evaluate", "report"}
    for verb in verbs:
        code, help_text, _ = run(capsys, verb, "--help")
        assert code == 0 and "--pretrained" in help_text, verb


def test_evaluate_and_report_take_a_shipped_model(tmp_path, capsys):
    code, out, err = run(capsys, "evaluate", "--pretrained", "mnist-ae", "--data", "mnist-5k", "--limit", "50",
                         "--quiet", "-o", tmp_path / "metrics.json")
    assert code == 0, err
    assert "PSNR" in out and json.loads((tmp_path / "metrics.json").read_text())["settings"]["test_images"] == 50
    code, out, err = run(capsys, "report", "--pretrained", "mnist-ae", "--data", "mnist-5k", "--limit", "50",
                         "--quiet", "-o", tmp_path / "rep")
    assert code == 0, err
    assert (tmp_path / "rep" / "report.html").stat().st_size > 10_000
    code, _, err = run(capsys, "report", "--pretrained", "mnist-ae", "--quiet")
    one_line_error(code, err, "-o")  # a shipped model's folder is not the user's to write in


def test_compare_says_when_runs_were_measured_on_different_test_sets(vae, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(vae, other)
    assert run(capsys, "evaluate", vae, "--limit", "40", "--iw-samples", "2", "--quiet")[0] == 0
    assert run(capsys, "evaluate", other, "--limit", "60", "--iw-samples", "2", "--quiet")[0] == 0
    code, out, err = run(capsys, "compare", vae, other, "--quiet", "-o", tmp_path / "t.md")
    assert code == 0, err
    assert "different" in out and "40" in out and "60" in out
    assert json.loads((tmp_path / "t.json").read_text())["warnings"]


def test_a_failed_download_leaves_no_empty_dataset_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AEKIT_MIRRORS", "http://127.0.0.1:9/")
    code, _, err = run(capsys, "train", "--data", "mnist", "--data-dir", tmp_path / "data", *TINY, "--epochs", "1",
                       "--out", tmp_path / "run")
    one_line_error(code, err, "could not download")
    assert not (tmp_path / "data" / "mnist").exists() and not (tmp_path / "run").exists()


# ----- 7. wording -----


def test_the_resume_message_says_which_batch_of_which_epoch(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "ae", "--hidden", "16", "--latent-dim", "4", "--batch-size", "8", "--epochs", "4",
            "--out", str(out)]
    proc = aekit_process(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(out / "metrics.jsonl")  # a first checkpoint exists (a signal before the loop starts leaves none)
    proc.send_signal(2)
    proc.communicate(timeout=120)
    done = subprocess.run([sys.executable, "-m", "aekit", *args, "--resume"], env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("resuming"))
    assert re.fullmatch(rf"resuming {re.escape(str(out))} at (batch \d+ of )?epoch \d of 4", line), line


def test_articles_and_messages_read_right(vae, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--model", "ae", "--resume", "--out", vae, "--quiet")
    one_line_error(code, err, "holds a vae run, not an ae run")
    text = tmp_path / "codes.npy"
    text.write_text("1,2,3\n4,5,6\n")
    code, _, err = run(capsys, "encode", vae, text, "-o", tmp_path / "c.npy")
    line = one_line_error(code, err, "not a NumPy file")
    assert "pickle" not in line


def test_the_wrong_host_message_names_the_port():
    import http.client

    from aekit.serve import make_explorer, start

    with start(make_explorer(aekit.pretrained("mnist-vae"), data="mnist-5k", limit=20), port=0) as running:
        port = int(running.url.rstrip("/").rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/info", headers={"Host": "evil.example"})
        response = connection.getresponse()
        error = json.loads(response.read())["error"]
    assert response.status == 400 and f"http://127.0.0.1:{port}/" in error, error
