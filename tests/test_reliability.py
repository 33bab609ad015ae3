"""Crash safety: SIGKILL at random moments, SIGINT/SIGTERM mid-epoch, resume to the same weights."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import kill_test  # noqa: E402  (bench/kill_test.py: the same harness as the 20-kill benchmark)


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    result = kill_test.run_with_kills(tmp_path / "run", epochs=3, kills=3, seed=1, log=lambda m: None)
    assert result["kills"] == 3
    assert result["resume_failures"] == 0
    assert result["final_weights_equal_uninterrupted"]
    assert result["metrics_epochs"] == [1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_saves_mid_epoch_and_resume_matches(tmp_path, sig):
    out = tmp_path / "run"
    # batch 8 on 4,000 images: 500 steps an epoch, 3 epochs: the signal lands inside the run
    extra = ["--batch-size", "8"]
    cmd = kill_test.train_command(out, 3, False) + extra
    proc = subprocess.Popen(cmd, env=kill_test._env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"stopped by {sig.name}" in err and "--resume" in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    from safetensors import safe_open

    with safe_open(str(out / "state.safetensors"), "pt") as f:
        progress = f.metadata()["progress"]
    # almost always a mid-epoch checkpoint; on a very slow machine the signal may land between epochs
    assert ('"batch"' in progress) == ("batch" in err)
    done = subprocess.run(kill_test.train_command(out, 3, True) + extra, env=kill_test._env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref = subprocess.run(kill_test.train_command(tmp_path / "ref", 3, False) + extra, env=kill_test._env(),
                         capture_output=True, text=True)
    assert ref.returncode == 0
    a, b = kill_test.weights(out), kill_test.weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in b)
