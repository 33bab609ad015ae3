"""Run folders on disk: safetensors for tensors, JSON for everything else. No pickle.

A run folder holds

* ``config.json``        -- the RunConfig, with ``format`` and ``format_version``;
* ``model.safetensors``  -- the model's weights (metadata: format, version, epoch);
* ``state.safetensors``  -- weights, optimizer and RNG states, epoch and step, for ``--resume``
  (one file, so one atomic rename commits a checkpoint: a crash at any moment leaves the
  previous one or the new one, never a mix);
* ``metrics.jsonl``      -- one JSON line per epoch.

Every file is written atomically: a temp file in the same folder, fsync, rename.
Loading validates the format stamp, the config, and every tensor's name, shape and dtype.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .core.config import RunConfig
from .errors import AekitError
from .core.model import Autoencoder

FORMAT = "aekit-run"
FORMAT_VERSION = 1
CONFIG = "config.json"
MODEL = "model.safetensors"
STATE = "state.safetensors"
METRICS = "metrics.jsonl"
MAX_JSON_BYTES = 16 * 1024 * 1024


# ----- atomic writes -----


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the new one."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise AekitError(f"cannot write in {path.parent}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise AekitError(f"cannot write {path}: {err.strerror or err}") from None
    _fsync_dir(path.parent)


def make_folder(path: Path) -> Path:
    """Create ``path`` (and its parents) or raise a one-line AekitError naming it and the OS reason."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AekitError(f"cannot create {path}: {err.strerror or err}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one line; lines are small, so a crash leaves at worst one partial last line (skipped on read)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise AekitError(f"cannot write {path}: {err.strerror or err}") from None


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return rows


# ----- reading, defensively -----


def read_json(path: Path, what: str) -> Any:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise AekitError(f"{path} is too large to be an aekit {what}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AekitError(f"{path} not found: is this an aekit run folder?") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AekitError(f"cannot read {path}: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AekitError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}): corrupt {what}?") from None


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; anything else -> AekitError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AekitError(f"{path} not found: is this an aekit run folder?") from None
    except OSError as err:
        raise AekitError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        header_len = int.from_bytes(data[:8], "little")
        if len(data) < 8 or data[8:9] != b"{" or 8 + header_len > len(data):
            raise ValueError("no safetensors header")
        header = json.loads(data[8 : 8 + header_len])
        tensors = st_load(data)
    except (SafetensorError, ValueError, OverflowError, UnicodeDecodeError) as err:
        if data[:1] == b"\x80" or data[:4] == b"PK\x03\x04":  # pickle protocol 2+ / torch.save's zip
            raise AekitError(f"{path} looks like a pickle or torch.save file; aekit loads only safetensors") from None
        raise AekitError(f"{path} is not a valid safetensors file (truncated or corrupt?): {err}") from None
    if not isinstance(header, dict):
        raise AekitError(f"{path} is not a valid safetensors file (bad header)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise AekitError(f"{path} is not a valid safetensors file (bad metadata)")
    return tensors, metadata


def _check_stamp(meta: dict, path: Path) -> None:
    if meta.get("format") != FORMAT:
        raise AekitError(f"{path} is not an aekit file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if str(version) != str(FORMAT_VERSION):
        raise AekitError(
            f"{path} has format version {version!r}; this aekit reads version {FORMAT_VERSION}: upgrade aekit"
        )


# ----- config and model -----


def save_config(run_dir: Path, config: RunConfig) -> None:
    from . import __version__

    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "aekit_version": __version__, **config.to_dict()}
    atomic_write_json(Path(run_dir) / CONFIG, payload)


def load_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    raw = read_json(path, "config")
    if not isinstance(raw, dict):
        raise AekitError(f"{path} must hold a JSON object")
    _check_stamp(raw, path)
    body = {k: v for k, v in raw.items() if k not in ("format", "format_version", "aekit_version")}
    try:
        return RunConfig.from_dict(body)
    except AekitError as err:
        raise AekitError(f"{path}: {err}") from None


HALF_DTYPES = (torch.float16, torch.bfloat16)


def save_model(run_dir: Path, model: Autoencoder, epoch: int, *, dtype: torch.dtype | None = None) -> None:
    """The user-facing weights. ``dtype=torch.float16`` stores the floating tensors in half precision
    (half the bytes, for weights shipped in a repository); :func:`load` casts them back."""
    if dtype is not None and dtype not in HALF_DTYPES:
        raise AekitError(f"weights can be stored as float16 or bfloat16, not {dtype}")
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "epoch": str(epoch)}
    atomic_write_bytes(Path(run_dir) / MODEL, st_save(state, metadata=meta))


def load_weights(model: Autoencoder, path: Path) -> int:
    """Load weights into ``model`` after checking every name, shape and dtype; returns the epoch."""
    tensors, meta = read_safetensors(path)
    _check_stamp(meta, path)
    _load_checked(model, tensors, path, half_ok=True)
    try:
        return int(meta.get("epoch", 0))
    except ValueError:
        raise AekitError(f"{path}: bad epoch stamp {meta.get('epoch')!r}") from None


def _load_checked(model: Autoencoder, tensors: dict[str, torch.Tensor], path: Path, *, half_ok: bool = False) -> None:
    """Load ``tensors`` into ``model`` after checking every name, shape and dtype against it.
    With ``half_ok``, float16/bfloat16 tensors are accepted for float32 ones and cast up."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise AekitError(
            f"{path} does not match its config: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for name, ref in expected.items():
        got = tensors[name]
        if half_ok and got.dtype in HALF_DTYPES and ref.dtype == torch.float32:
            got = tensors[name] = got.float()
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise AekitError(
                f"{path}: tensor {name} is {got.dtype} {tuple(got.shape)}, "
                f"the config needs {ref.dtype} {tuple(ref.shape)}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise AekitError(f"{path}: tensor {name} holds NaN or inf")
    model.load_state_dict(tensors)


def load(run_dir: str | os.PathLike) -> Autoencoder:
    """Rebuild the trained model of a run folder.

    Parameters
    ----------
    run_dir : path
        A folder written by ``aekit train`` (or :func:`aekit.train`).

    Returns
    -------
    Autoencoder
        In eval mode; ``model.run_config`` holds the whole RunConfig.

    Examples
    --------
    >>> model = aekit.load("runs/vae-mlp-mnist-5k")      # doctest: +SKIP
    >>> model.sample(16).shape                             # doctest: +SKIP
    torch.Size([16, 1, 28, 28])
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AekitError(f"{run_dir} is not a folder: pass a run folder written by 'aekit train'")
    config = load_config(run_dir)
    model = Autoencoder(config.model)
    model.epoch = load_weights(model, run_dir / MODEL)
    model.run_config = config
    model.run_dir = run_dir
    return model.eval()


# ----- training state, for resume -----


def save_state(
    run_dir: Path,
    *,
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
    step: int,
    progress: dict[str, Any] | None = None,
) -> None:
    """Everything a resume needs in ONE file, committed by one atomic rename.

    ``epoch`` counts completed epochs. ``progress`` describes a partly done epoch (after
    SIGINT/SIGTERM): the batch reached, the generator state at the epoch's start (to redraw
    its shuffle) and the running loss sums.
    """
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
    }
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone().contiguous()
    progress = dict(progress or {})
    if "epoch_rng" in progress:
        tensors["rng.epoch_start"] = progress.pop("epoch_rng")
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "epoch": str(epoch),
        "step": str(step),
        "param_groups": json.dumps(opt["param_groups"]),
        "progress": json.dumps(progress),
    }
    atomic_write_bytes(Path(run_dir) / STATE, st_save(tensors, metadata=meta))


def load_state(
    run_dir: Path, model: Autoencoder, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, int, dict[str, Any]]:
    """Restore weights, optimizer and RNG state; returns ``(epoch, step, progress)``."""
    path = Path(run_dir) / STATE
    tensors, meta = read_safetensors(path)
    _check_stamp(meta, path)
    try:
        epoch, step = int(meta["epoch"]), int(meta["step"])
        groups = json.loads(meta["param_groups"])
        progress = json.loads(meta.get("progress", "{}"))
    except (KeyError, ValueError) as err:
        raise AekitError(f"{path} has a damaged header ({err})") from None
    if not isinstance(groups, list) or not isinstance(progress, dict):
        raise AekitError(f"{path} has a damaged header")
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    _load_checked(model, weights, path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        parts = name.split(".")
        if parts[0] == "optim" and len(parts) == 3 and parts[1].isdigit():
            state.setdefault(int(parts[1]), {})[parts[2]] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise AekitError(f"{path}: training state does not fit this model/optimizer: {err}") from None
    if "rng.epoch_start" in tensors:
        progress["epoch_rng"] = tensors["rng.epoch_start"]
    return epoch, step, progress
