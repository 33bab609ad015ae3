"""The learned image codec: ``.aek`` files written and read with a model whose code is quantized.

A model trained with ``latent="entropy"`` (a spatial code rounded to integers, its rate paid in training; see
:mod:`aekit.core.entropy`) compresses an image to its integer code map, range-coded by ``constriction`` with each
channel's integer frequency table. The tables are part of the saved weights, so the encoder and the decoder use
the same integers: a file decodes to the same code map in any process, with any thread count.

The file (all integers little-endian)::

    magic       3 bytes  b"AEK"
    version     1 byte   FORMAT_VERSION
    model       8 bytes  the first 8 bytes of the SHA-256 of the model's weights and tables (model_id)
    channels    1 byte   image channels (1 or 3)
    height      4 bytes  the image's size in pixels
    width       4 bytes
    words       4 bytes  32-bit words of coded data that follow
    checksum    4 bytes  CRC-32 of those words
    data        4 x words bytes: one range-coded stream: each channel's symbols in order (the integer minus the
                table's offset; one past the table: an escape), then every escaped integer (a uniform 16-bit value)

Its size on disk is the rate: bits per pixel = 8 x file size / (height x width).
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .core.config import QUANTIZED
from .core.model import Autoencoder
from .core.refine import refine_code
from .data.load import iter_photos
from .data.machine import check_memory
from .errors import AekitError
from .files import atomic_write_bytes, check_writable, make_folder, output_stem
from .metrics.pixels import mean_psnr
from .run import Run

MAGIC = b"AEK"
FORMAT_VERSION = 1
HEADER = struct.Struct("<3sB8sBIIII")  # magic, version, model id, channels, height, width, words, checksum
ESCAPE_RANGE = 1 << 16  # an escaped integer is coded uniformly over [-2^15, 2^15)
MAX_SIDE = 1 << 16  # pixels per side a file may declare
DECODE_COPIES = 24  # float32 copies of the image the decoder may hold at its peak (the widest stage's activations)
REFINE_COPIES = 96  # ... and refining a code, which keeps the decoder's activations for the backward pass


def model_id(model: Autoencoder) -> bytes:
    """8 bytes naming the exact model: a file coded with one model is refused by another."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()[:8]


def check_codec(model: Autoencoder) -> None:
    if model.config.latent not in QUANTIZED:
        raise AekitError(f"this run's code is {model.config.latent!r}, not quantized: compress needs a model "
                         "trained with --latent entropy or hyperprior (a learned compressor)")


def _categorical(frequencies: np.ndarray):
    """constriction's model of integer frequencies (as float64: exact, so the same fixed-point model everywhere)."""
    import constriction

    return constriction.stream.model.Categorical(frequencies.astype(np.float64), perfect=False)


def _escape_model():
    import constriction

    return constriction.stream.model.Uniform(ESCAPE_RANGE)


def _encode_groups(encoder, groups) -> None:
    """Each group (integers (n,), first integer, table length, frequencies) coded with its table; integers outside
    the table as its escape symbol, then all of them, after every group, uniformly in 16 bits."""
    escaped_values = []
    for values, first, length, frequencies in groups:
        symbols = values - first
        escaped = (symbols < 0) | (symbols >= length)
        escaped_values.append(values[escaped])
        encoder.encode(np.where(escaped, length, symbols).astype(np.int32), _categorical(frequencies))
    values = np.concatenate(escaped_values) if escaped_values else np.zeros(0, np.int64)
    if len(values) and np.abs(values).max() >= ESCAPE_RANGE // 2:
        raise AekitError("the image's code holds values beyond what the format stores (|n| >= 32768): the model "
                         "is not a working compressor")
    if len(values):
        encoder.encode((values + ESCAPE_RANGE // 2).astype(np.int32), _escape_model())


def _decode_groups(decoder, groups) -> list[np.ndarray]:
    """The inverse of :func:`_encode_groups`; ``groups``: (count, first integer, table length, frequencies)."""
    symbols = [decoder.decode(_categorical(frequencies), count) for count, _, _, frequencies in groups]
    escaped = [s == length for s, (_, _, length, _) in zip(symbols, groups)]
    values = [s.astype(np.int64) + first for s, (_, first, _, _) in zip(symbols, groups)]
    n = int(sum(e.sum() for e in escaped))
    if n:
        raw = decoder.decode(_escape_model(), n).astype(np.int64) - ESCAPE_RANGE // 2
        at = 0
        for v, e in zip(values, escaped):
            v[e] = raw[at : at + int(e.sum())]
            at += int(e.sum())
    return values


def _factorized_groups(density, code: torch.Tensor | None, positions: int) -> list[tuple]:
    """One group per channel of a factorized density: (the channel's integers or their count, first, length,
    frequencies)."""
    first, length, tables = density.table_offset.tolist(), density.table_length.tolist(), density.table.numpy()
    return [(code[c].flatten().numpy() if code is not None else positions, first[c], length[c],
             tables[c, : length[c] + 1]) for c in range(len(first))]


def _scale_groups(head, y: torch.Tensor | None, indexes: torch.Tensor) -> list[tuple]:
    """One group per coded scale that occurs: y's integers of that scale, in raster order, zero-centred."""
    lengths, tables = head.gaussian_length.tolist(), head.gaussian_table.numpy()
    groups = []
    for i in torch.unique(indexes).tolist():
        mask = indexes == i
        k = (lengths[i] - 1) // 2
        groups.append((y[mask].numpy() if y is not None else int(mask.sum()), -k, lengths[i],
                       tables[i, : lengths[i] + 1]))
    return groups


def compress(model: Autoencoder, image: torch.Tensor, *, decoded: bool = False, refine: int = 0,
             objective=None) -> bytes | tuple[bytes, torch.Tensor]:
    """A uint8 image (C, H, W) -> the bytes of an ``.aek`` file (and, with ``decoded``, the uint8 image the file
    decodes to, from the same integer code). ``refine`` > 0 optimizes the code for this image in that many steps
    on the run's ``objective`` before coding it (:mod:`aekit.core.refine`; the file decodes as any other)."""
    check_codec(model)
    c, h, w = image.shape
    if c != model.config.channels or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise AekitError(f"the image is {c}x{h}x{w}; this model compresses {model.config.channels}-channel images "
                         f"of at most {MAX_SIDE} pixels a side")
    model.eval()
    x = model.prepare(image[None])
    if refine > 0:
        if objective is None or objective.lmbda is None:
            raise AekitError("refining a code needs the run's rate-distortion objective (its --lmbda)")
        y, z, _ = refine_code(model, x, objective, refine)
        code, side = torch.round(y)[0], (torch.round(z)[0] if z is not None else None)
    else:
        with torch.no_grad():
            posterior = model.encode(x)
        code, side = posterior.mode()[0], getattr(posterior, "side", None)
        side = side[0] if side is not None else None
    return _code_file(model, code.to(torch.int64), side, (c, h, w), decoded)


@torch.inference_mode()
def _code_file(model: Autoencoder, code: torch.Tensor, side: torch.Tensor | None, shape: tuple[int, int, int],
               decoded: bool) -> bytes | tuple[bytes, torch.Tensor]:
    """Integer code maps (C', h', w'), and the side code of a hyperprior model, -> the ``.aek`` file's bytes."""
    import constriction

    c, h, w = shape
    encoder = constriction.stream.queue.RangeEncoder()
    if model.config.latent == "hyperprior":  # the side code first: the decoder needs it for y's scales
        side = side.to(torch.int64)
        _encode_groups(encoder, _factorized_groups(model.head.density, side, side[0].numel()))
        indexes = model.head.scale_indexes(side[None], code.shape[-2:])[0]
        _encode_groups(encoder, _scale_groups(model.head, code, indexes))
    else:
        _encode_groups(encoder, _factorized_groups(model.head.density, code, code[0].numel()))
    words = encoder.get_compressed().astype("<u4").tobytes()
    header = HEADER.pack(MAGIC, FORMAT_VERSION, model_id(model), c, h, w, len(words) // 4, zlib.crc32(words))
    if not decoded:
        return header + words
    return header + words, _decode_code(model, code.float()[None], (h, w))


def read_header(data: bytes) -> dict:
    """The header's fields, after checking what can be checked without the model (one-line errors)."""
    if len(data) < HEADER.size:
        raise AekitError(f"not an .aek file: {len(data)} bytes, shorter than the {HEADER.size}-byte header")
    magic, version, ident, c, h, w, words, checksum = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise AekitError("not an .aek file (no AEK signature)")
    if version != FORMAT_VERSION:
        raise AekitError(f".aek format version {version} is not supported (this aekit reads {FORMAT_VERSION})")
    if c not in (1, 3) or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise AekitError(f"the file declares a {c}-channel {w}x{h} image, which no .aek file holds")
    if len(data) != HEADER.size + 4 * words:
        raise AekitError(f"the file is {len(data)} bytes but declares {HEADER.size + 4 * words}: truncated or "
                         "corrupted")
    if zlib.crc32(data[HEADER.size:]) != checksum:
        raise AekitError("the file is corrupted (its checksum does not match)")
    return {"model_id": ident, "channels": c, "height": h, "width": w, "words": words}


@torch.inference_mode()
def decompress(model: Autoencoder, data: bytes) -> torch.Tensor:
    """The bytes of an ``.aek`` file -> the uint8 image (C, H, W)."""
    import constriction

    check_codec(model)
    head = read_header(data)
    if head["model_id"] != model_id(model):
        raise AekitError("the file was written by another model (its model id differs): decompress it with the run "
                         "that compressed it")
    c, h, w = head["channels"], head["height"], head["width"]
    if c != model.config.channels:
        raise AekitError(f"the file holds a {c}-channel image; this model decodes {model.config.channels}")
    check_memory(f"decoding a {w}x{h} image", DECODE_COPIES * 4 * c * h * w)
    channels, lh, lw = model.latent_shape((h, w))
    words = np.frombuffer(data, dtype="<u4", offset=HEADER.size).astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    try:
        if model.config.latent == "hyperprior":
            sh, sw = -(-lh // 4), -(-lw // 4)
            side = np.stack(_decode_groups(decoder, _factorized_groups(model.head.density, None, sh * sw)))
            side = torch.from_numpy(side).reshape(1, channels, sh, sw)
            indexes = model.head.scale_indexes(side, (lh, lw))[0]
            code = torch.zeros(channels, lh, lw, dtype=torch.int64)
            groups = _scale_groups(model.head, None, indexes)
            for i, values in zip(torch.unique(indexes).tolist(), _decode_groups(decoder, groups)):
                code[indexes == i] = torch.from_numpy(values)
        else:
            groups = _factorized_groups(model.head.density, None, lh * lw)
            code = torch.from_numpy(np.stack(_decode_groups(decoder, groups)))
    except (ValueError, RuntimeError, AssertionError, KeyError) as error:  # a stream the coder cannot decode
        raise AekitError(f"the file's coded data cannot be decoded ({error})") from None
    return _decode_code(model, code.reshape(1, channels, lh, lw).float(), (h, w))


def _decode_code(model: Autoencoder, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An integer code map (1, C', h', w') as floats -> the uint8 image (C, H, W)."""
    return model.mean(model.decode(z, size=size))[0].mul(255).round_().clamp_(0, 255).to(torch.uint8)


def bits_per_pixel(data: bytes) -> float:
    """The rate of an ``.aek`` file: 8 x its bytes / its pixels."""
    head = read_header(data)
    return 8 * len(data) / (head["height"] * head["width"])


def compress_files(run: Run, spec: str, out: str | Path, *, limit: int | None = None,
                   data_dir: str | None = None, refine: int = 0) -> dict:
    """Each image of ``spec`` as an ``.aek`` file (:mod:`aekit.codec`): ``out`` is the file for one image, or a
    folder for several (one file per image, named after it). Each file is written whole or not at all. ``refine``:
    steps of optimizing each image's code before it is coded (:func:`compress`)."""
    out = Path(out)
    model, rows_, names = run.model, [], set()
    check_codec(model)
    single = out.suffix == ".aek"
    check_writable(out, folder=not single)
    for i, (name, image) in enumerate(iter_photos(spec, channels=model.config.channels,
                                                  data_dir=data_dir or run.config.data.data_dir)):
        if limit is not None and i >= limit:
            break
        if single and i > 0:
            raise AekitError(f"{spec} holds more than one image: give -o a folder, not {out.name}")
        check_memory(f"compressing a {image.shape[-1]}x{image.shape[-2]} image" + (" with --refine" if refine else ""),
                     (REFINE_COPIES if refine else DECODE_COPIES) * 4 * image.numel())
        data, decoded = compress(model, image[0], decoded=True, refine=refine, objective=run.config.objective)
        stem = output_stem(name, i, names)
        target = out if single else make_folder(out) / f"{stem}.aek"
        atomic_write_bytes(target, data)
        rows_.append({"bits_per_pixel": bits_per_pixel(data),
                      "psnr_db": mean_psnr(decoded[None].float() / 255, image.float() / 255), "bytes": len(data)})
    if not rows_:
        raise AekitError(f"{spec} holds no images")
    return {"images": len(rows_), "bits_per_pixel": sum(r["bits_per_pixel"] for r in rows_) / len(rows_),
            "psnr_db": sum(r["psnr_db"] for r in rows_) / len(rows_), "bytes": sum(r["bytes"] for r in rows_),
            "output": str(out)}


def decompress_files(run: Run, spec: str, out: str | Path) -> dict:
    """``.aek`` files (one, or a folder of them) -> PNGs: ``out`` is the PNG for one file, or a folder."""
    source, out = Path(spec), Path(out)
    check_codec(run.model)
    if source.is_dir():
        files = sorted(source.glob("*.aek"))
        if not files:
            raise AekitError(f"{spec} holds no .aek files")
    elif source.is_file():
        files = [source]
    else:
        raise AekitError(f"{spec}: no such file or folder")
    single = out.suffix.lower() == ".png"
    if single and len(files) > 1:
        raise AekitError(f"{spec} holds {len(files)} files: give -o a folder, not {out.name}")
    check_writable(out, folder=not single)
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise AekitError(f"cannot read {path}: {error.strerror or error}") from None
        try:
            image = decompress(run.model, data)
        except AekitError as error:
            raise AekitError(f"{path.name}: {error}") from None
        target = out if single else make_folder(out) / f"{path.stem}.png"
        buffer = io.BytesIO()
        to_pil_uint8(image).save(buffer, "PNG")
        atomic_write_bytes(target, buffer.getvalue())
    return {"images": len(files), "output": str(out)}


def to_pil_uint8(image: torch.Tensor):
    """A uint8 (C, H, W) tensor as a PIL image."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


__all__ = ["FORMAT_VERSION", "bits_per_pixel", "check_codec", "compress", "compress_files", "decompress",
           "decompress_files", "model_id", "read_header"]
