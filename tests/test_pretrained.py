"""The shipped pretrained models: they load offline, their cards' metrics recompute, and --pretrained works."""

import fnmatch
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import aekit
from aekit.cli import main
from aekit.data import load_images

NAMES = [f"{data}-{family}" for data in ("fashion-mnist", "mnist") for family in ("ae", "dae", "sae", "vae")]
PHOTO = ["photo-denoise", "photo-denoise-grey"]  # bench/denoise.py's blind denoisers, by bench/make_pretrained.py
PHOTO_SETS = {"photo-denoise": ("cbsd68", "RGB", 68), "photo-denoise-grey": ("set12", "L", 12)}
ROOT = Path(__file__).resolve().parents[1]



def assert_close_metrics(got: dict, want: dict) -> None:
    assert set(got) <= set(want), set(got) - set(want)
    for key, value in got.items():
        assert value == pytest.approx(want[key], rel=1e-4, abs=1e-5), key


def test_available_lists_the_eight_digit_models_and_the_photo_denoisers():
    assert aekit.pretrained.available() == NAMES + PHOTO


@pytest.mark.parametrize("name", NAMES)
def test_each_model_loads_and_reproduces_its_check_metrics(name):
    """Cheap and always offline: the card's metrics on the embedded mnist-5k test split recompute."""
    run = aekit.pretrained(name)
    model, card = run.model, run.card
    assert run.name == name and run.label == name and card["name"] == name and not model.training
    family, dataset = card["family"], card["data"]["name"]
    assert run.config.family == family and run.config.data.data == dataset
    assert model.config.hidden == tuple(card["options"]["hidden"])
    assert model.config.latent_dim == card["options"]["latent_dim"]
    assert card["seed"] == run.config.train.seed and "bench/make_pretrained.py" in card["command"]
    check = aekit.load_dataset("mnist-5k", progress=False).test.images
    want = {k: v for k, v in card["check"].items() if k not in ("data", "split")}
    assert_close_metrics(aekit.pretrained.measure(run, check), want)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_test_metrics_recompute_on_the_real_test_split(shared_data, dataset):
    """The metrics recorded at creation on the full 10,000-image test split (skipped without ../shared/data)."""
    test = load_images(dataset, data_dir=shared_data, download=False, progress=False)
    assert len(test) == 10_000
    for family in ("ae", "dae", "sae", "vae"):
        run = aekit.pretrained(f"{dataset}-{family}")
        want = {k: v for k, v in run.card["metrics"].items() if k not in ("data", "split")}
        assert_close_metrics(aekit.pretrained.measure(run, test.images), want)


def test_the_families_behave_as_their_cards_say():
    cards = {name: aekit.pretrained.card(name) for name in NAMES}
    for data in ("mnist", "fashion-mnist"):
        ae, dae, vae = (cards[f"{data}-{f}"]["metrics"] for f in ("ae", "dae", "vae"))
        assert dae["psnr_denoised_db"] > ae["psnr_denoised_db"] + 2  # the denoising AE denoises
        assert dae["psnr_denoised_db"] > dae["psnr_noisy_db"] + 3
        assert vae["kl"] > 0 and ae["kl"] == 0
        assert all(cards[f"{data}-{f}"]["metrics"]["psnr_db"] > 13 for f in ("ae", "dae", "sae", "vae"))


@pytest.mark.parametrize("name", PHOTO)
def test_the_photo_denoisers_reproduce_their_check_and_denoise_as_their_cards_say(name):
    import hashlib

    run = aekit.pretrained(name)
    card, (test_set, mode, n_images) = run.card, PHOTO_SETS[name]
    assert run.model.config.arch == "unet" and run.model.config.spatial and run.config.family == "dae"
    assert run.model.config.channels == (3 if mode == "RGB" else 1)
    assert card["options"]["epochs"] <= card["options"]["epochs_planned"] and "bench/make_pretrained.py" in card["command"]
    # the synthetic check image is the same bytes everywhere, and the card's numbers recompute on it
    image = aekit.pretrained.check_photo(grey=mode == "L")
    assert hashlib.sha256(aekit.pretrained.check_photo().numpy().tobytes()).hexdigest() == (
        "aaf6bae5cbd4fa51e560a929c9215abc889c0a30180b5f0c47ef8d0455289330")
    want = {k: v for k, v in card["check"].items() if k not in ("data", "split")}
    assert_close_metrics(aekit.pretrained.measure_denoiser(run, [image], want["noise_std"]), want)
    # what the card records on its test set is a denoiser's: more than 6 dB gained at sigma 25
    m = card["metrics"]
    assert m["data"] == test_set and m["images"] == n_images and m["noise_std"] == pytest.approx(25 / 255)
    assert m["psnr_denoised_db"] > m["psnr_noisy_db"] + 6


def test_the_grey_check_image_is_the_colour_one_in_luminance():
    colour, grey = aekit.pretrained.check_photo().double(), aekit.pretrained.check_photo(grey=True)
    assert grey.shape == (1, 80, 120) and str(grey.dtype) == "torch.uint8"
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    assert (grey[0].double() - luminance).abs().max() <= 0.5 + 1e-9


@pytest.mark.parametrize("name", PHOTO)
def test_the_photo_denoisers_test_set_metrics_recompute(shared_data, name):
    """A card's test-set numbers for its first 8 images (the same noise as in the whole set), recomputed from the
    shipped weights, and the card's means are the means of its per-image numbers (skipped without ../shared/data;
    the whole set takes a minute: ``bench/make_pretrained.py --only NAME`` recomputes it)."""
    from PIL import Image

    test_set, mode, n_images = PHOTO_SETS[name]
    files = sorted((Path(shared_data) / test_set).glob("*.png"))[:8]
    images = [np.asarray(Image.open(f).convert(mode)) for f in files]
    images = [a.transpose(2, 0, 1).copy() if a.ndim == 3 else a[None].copy() for a in images]
    run = aekit.pretrained(name)
    want = run.card["metrics"]
    got = aekit.pretrained.measure_denoiser(run, images, want["noise_std"])
    for key in ("psnr_noisy_db_per_image", "psnr_denoised_db_per_image"):
        assert got[key] == pytest.approx(want[key][:8], rel=1e-4, abs=1e-5), key
        assert np.mean(want[key]) == pytest.approx(want[key.removesuffix("_per_image")], rel=1e-9)
    assert len(want["psnr_denoised_db_per_image"]) == want["images"] == n_images


def test_denoise_with_the_photo_denoiser_writes_one_photo_at_its_size_and_mode(tmp_path, capsys):
    from PIL import Image

    y, x = np.mgrid[0:51, 0:71]
    clean = np.stack([(x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(clean).save(tmp_path / "odd.png")
    Image.fromarray(clean).convert("L").save(tmp_path / "grey.png")
    assert main(["denoise", "--pretrained", "photo-denoise", str(tmp_path / "odd.png"), "--noise-std", "0.1",
                 "-o", str(tmp_path / "out.png")]) == 0
    out = capsys.readouterr().out
    noisy_db, denoised_db = (float(line.split()[-1]) for line in out.splitlines() if line.startswith("psnr_"))
    assert denoised_db > noisy_db + 3
    result = Image.open(tmp_path / "out.png")
    assert result.size == (71, 51) and result.mode == "RGB"
    assert main(["denoise", "--pretrained", "photo-denoise", str(tmp_path / "grey.png"), "-o",
                 str(tmp_path / "grey-out.png")]) == 0
    result = Image.open(tmp_path / "grey-out.png")
    assert result.size == (71, 51) and result.mode == "L"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey-out.png", "grey.png", "odd.png", "out.png"]
    # a .png output names one image: a folder of photos is refused before anything is written
    code = main(["denoise", "--pretrained", "photo-denoise", str(tmp_path), "-o", str(tmp_path / "all.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "names one image" in err
    assert not (tmp_path / "all.png").exists()
    # its training data is not shipped: verbs that read a run's data ask for --data in one line
    for verb in ("evaluate", "serve"):
        code = main([verb, "--pretrained", "photo-denoise"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "bsds500-minus-cbsd68.npz, is not here" in err and "--data" in err


def test_unknown_name_lists_the_names():
    with pytest.raises(aekit.AekitError, match="unknown pretrained model 'mnist-gan'; available: fashion-mnist-ae, "):
        aekit.pretrained("mnist-gan")


def test_shipped_files_are_small_relative_and_packaged():
    root = resources.files("aekit.pretrained")
    files = [p for name in NAMES for p in Path(str(root / name)).iterdir()]
    assert sum(p.stat().st_size for p in files) < 8 * 2**20
    for name in PHOTO:
        photo = list(Path(str(root / name)).iterdir())
        assert sum(p.stat().st_size for p in photo) < 6 * 2**20  # half-precision weights
        files += photo
    # nothing machine-specific: no absolute paths in any JSON
    for path in files:
        if path.suffix in (".json", ".jsonl"):
            text = path.read_text()
            assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text, path
    for name in NAMES + PHOTO:
        config = json.loads((Path(str(root / name)) / "config.json").read_text())
        assert config["data"]["data_dir"] is None
    # pyproject's package data covers every shipped file, so a wheel carries them
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["aekit.pretrained"]
    for path in files:
        rel = f"{path.parent.name}/{path.name}"
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in patterns), rel


def test_pretrained_works_in_every_verb_that_takes_a_run(capsys, tmp_path):
    ok = [
        ["info", "--pretrained", "mnist-sae"],
        ["encode", "--pretrained", "mnist-vae", "mnist-5k", "--limit", "10", "-o", tmp_path / "codes.npy"],
        ["reconstruct", "mnist-5k", "--pretrained", "fashion-mnist-ae", "--limit", "4", "-o", tmp_path / "rec.npy"],
        ["denoise", "--pretrained", "mnist-dae", "mnist-5k", "--noise-std", "0.5", "--limit", "4", "-o", tmp_path / "dn.npy"],
        ["sample", "--pretrained", "fashion-mnist-vae", "-n", "3", "-o", tmp_path / "s.npy"],
    ]
    for argv in ok:
        assert main([str(a) for a in argv]) == 0, argv
    out = capsys.readouterr().out
    assert "family      sae" in out and "noise_std         0.5" in out
    assert np.load(tmp_path / "codes.npy").shape == (10, 32)
    assert np.load(tmp_path / "s.npy").shape == (3, 1, 28, 28)


def test_pretrained_and_run_errors_are_one_line(capsys, tmp_path):
    cases = [
        (["sample", "-o", tmp_path / "s.png"], "sample needs a run folder (RUN) or --pretrained NAME"),
        (["encode", "mnist-5k", "-o", tmp_path / "c.npy"], "needs a run folder (RUN) or --pretrained NAME"),
        (["info", tmp_path, "--pretrained", "mnist-vae"], "not both"),
        (["info", "--pretrained", "nope"], "unknown pretrained model 'nope'; available: fashion-mnist-ae"),
    ]
    for argv, pattern in cases:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and pattern in lines[0], (argv, err)
