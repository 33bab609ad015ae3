"""The explorer's web app (Starlette): the page's three files and a small JSON API over an :class:`Explorer`.

Every request is validated before it reaches the model: JSON bodies only (``application/json``, which a
cross-site form cannot send without the browser asking first), at most ``MAX_BODY_BYTES``, no unknown fields,
finite numbers in stated ranges, latent vectors of the model's length, at most ``MAX_BATCH`` codes or points
per request and ``MAX_FRAMES`` interpolation frames, uploads of at most ``MAX_UPLOAD_BYTES`` in a known image
format. A bad request gets a 4xx answer ``{"error": "..."}``; nothing a client sends stops the server.
When bound to a loopback address the server also refuses other ``Host`` names (DNS rebinding).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from importlib import resources

import numpy as np
import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..data import conform
from ..errors import AekitError
from .explorer import Explorer

MAX_BODY_BYTES = 4 * 2**20  # any request body
MAX_UPLOAD_BYTES = 2 * 2**20  # an uploaded image file (sent base64-encoded in the JSON body)
PHOTO_SIDE_MAX = 1024  # a model with a spatial latent takes an upload at its size, up to this on its longer side
MAX_UPLOAD_PIXELS = 4096 * 4096
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MAX_BATCH = 64  # codes, map points or samples per request
MAX_FRAMES = 32  # interpolation frames
MAX_ABS = 1e3  # |latent value| and |map coordinate|
MAX_SEED = 2**31 - 1
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

log = logging.getLogger("aekit.serve")


class ApiError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ----- validation -----


def _reject_constant(name: str):
    raise ApiError(f"{name} is not a number JSON allows; send finite numbers")


async def _json(request: Request, fields: dict[str, bool]) -> dict:
    """The request's JSON object; ``fields`` maps each allowed key to whether it is required."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(f"send the request body as application/json (got {kind or 'no content type'!r})", 415)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise ApiError(f"the request body is larger than {MAX_BODY_BYTES >> 20} MiB", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(f"the request body is larger than {MAX_BODY_BYTES >> 20} MiB", 413)
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiError(f"the request body must be a JSON object, not {_kind(data)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ApiError(f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(sorted(fields))}")
    missing = [k for k, required in fields.items() if required and k not in data]
    if missing:
        raise ApiError(f"missing field {missing[0]!r}")
    return data


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(f"{name} must be a number, not {_kind(value)}")
    if not low <= value <= high:  # also refuses NaN and +-inf (JSON's 1e999), and huge ints without float()
        raise ApiError(f"{name} must be a finite number in [{low:g}, {high:g}] (got {value!r})")
    return float(value)


def _integer(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"{name} must be an integer, not {_kind(value)}")
    if not low <= value <= high:
        raise ApiError(f"{name} must be in {low}..{high} (got {value})")
    return value


def _vector(value, name: str, length: int) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        got = f"{len(value)} numbers" if isinstance(value, list) else _kind(value)
        raise ApiError(f"{name} must be an array of {length} numbers (got {got})")
    return [_number(v, f"{name}[{i}]", -MAX_ABS, MAX_ABS) for i, v in enumerate(value)]


def _rows(value, name: str, width: int) -> torch.Tensor:
    """A non-empty array of at most MAX_BATCH vectors of ``width`` numbers -> (N, width) float tensor."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
        got = f"{len(value)} rows" if isinstance(value, list) else _kind(value)
        raise ApiError(f"{name} must be an array of 1 to {MAX_BATCH} rows (got {got})")
    return torch.tensor([_vector(row, f"{name}[{i}]", width) for i, row in enumerate(value)], dtype=torch.float32)


def _boolean(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(f"{name} must be true or false, not {_kind(value)}")
    return value


def _upload(text, shape: tuple[int, int, int], invert: bool, any_size: bool = False) -> torch.Tensor:
    """A base64 image (a data URL or bare base64) -> uint8 (1, C, H, W) in the model's shape; with ``any_size`` (a
    spatial latent) at its own size, scaled down to ``PHOTO_SIDE_MAX`` pixels on its longer side if larger."""
    if not isinstance(text, str):
        raise ApiError(f"image must be a base64 string or data URL, not {_kind(text)}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > MAX_UPLOAD_BYTES + 2:
        raise ApiError(f"the image is larger than the {MAX_UPLOAD_BYTES >> 20} MiB upload limit", 413)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("image is not valid base64") from None
    if not data:
        raise ApiError("image is empty")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as im:
            if im.width * im.height > MAX_UPLOAD_PIXELS:
                raise ApiError(f"the image has {im.width}x{im.height} pixels; the limit is 4096x4096", 413)
            im.load()
            if "A" in im.getbands() or "transparency" in im.info:  # transparent pixels become black
                im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
            pixels = np.asarray(im.convert("RGB"))  # (H, W, 3)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        raise ApiError(f"the upload is not a readable {'/'.join(UPLOAD_FORMATS)} image "
                       f"({type(exc).__name__})", 415) from None
    images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]  # (H, W, 3) -> (1, 3, H, W)
    if invert:
        images = 255 - images
    c, h, w = shape
    if any_size:
        scale = min(1.0, PHOTO_SIDE_MAX / max(images.shape[-2:]))
        h, w = (max(1, round(side * scale)) for side in images.shape[-2:])
    return conform(images, channels=c, image_size=(h, w))


# ----- the app -----


def _host_name(scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"host":
            host = value.decode("latin-1").lower()
            return host if host.endswith("]") else host.rsplit(":", 1)[0]
    return ""


class _Guard:
    """ASGI middleware: refuse unknown Host names (when given) and add the security headers."""

    def __init__(self, app, hosts: set[str] | None) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
            await send(message)

        host = _host_name(scope)
        if self.hosts is not None and host not in self.hosts:
            port = (scope.get("server") or ("", None))[1]
            address = f"http://127.0.0.1:{port}/" if port else "http://127.0.0.1/"
            response = JSONResponse({"error": f"unexpected Host {host!r}: open the page as {address}"}, 400)
            return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


def allowed_hosts(host: str) -> set[str] | None:
    """Host names a server bound to ``host`` answers: loopback names for a loopback address, else any (None)."""
    if host not in LOOPBACK:
        return None
    return {"127.0.0.1", "localhost", "[::1]"}


def build_app(explorer: Explorer, *, host: str = "127.0.0.1") -> Starlette:
    """The Starlette app serving ``explorer``: the page at ``/`` and the JSON API under ``/api/``."""
    folder = resources.files(__package__) / "static"
    assets = {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}
    d = explorer.latent_dim

    async def asset(request: Request) -> Response:
        body, kind = assets[request.url.path]
        return Response(body, media_type=kind)

    async def info(request: Request) -> JSONResponse:
        limits = {"max_batch": MAX_BATCH, "max_frames": MAX_FRAMES, "max_upload_bytes": MAX_UPLOAD_BYTES,
                  "max_abs": MAX_ABS}
        return JSONResponse({**explorer.info(), "limits": limits})

    async def latent_map(request: Request) -> JSONResponse:
        return JSONResponse(explorer.map())

    async def test_image(request: Request) -> JSONResponse:
        text = request.path_params["index"]
        n = len(explorer)
        if not text.isdigit() or int(text) >= n:
            raise ApiError(f"test image index must be an integer in 0..{n - 1} (got {text[:20]!r})", 404)
        return JSONResponse(explorer.test_image(int(text)))

    async def decode(request: Request) -> JSONResponse:
        body = await _json(request, {"codes": True})
        return JSONResponse(explorer.decode(_rows(body["codes"], "codes", d)))

    async def decode_map(request: Request) -> JSONResponse:
        body = await _json(request, {"points": True})
        return JSONResponse(explorer.decode_map(_rows(body["points"], "points", 2)))

    async def sample(request: Request) -> JSONResponse:
        body = await _json(request, {"n": False, "seed": False})
        n = _integer(body.get("n", 1), "n", 1, MAX_BATCH)
        return JSONResponse(explorer.sample(n, _integer(body.get("seed", 0), "seed", 0, MAX_SEED)))

    async def analyze(request: Request) -> JSONResponse:
        body = await _json(request, {"image": True, "noise_std": False, "invert": False, "seed": False})
        noise = _number(body.get("noise_std", explorer.noise_std), "noise_std", 0.0, 1.0)
        seed = _integer(body.get("seed", 0), "seed", 0, MAX_SEED)
        image = _upload(body["image"], explorer.model.config.image_shape, _boolean(body.get("invert", False), "invert"),
                        any_size=explorer.model.config.spatial)
        return JSONResponse(explorer.analyze(image, noise, seed))

    def _end(value, name: str) -> torch.Tensor:
        if isinstance(value, int) and not isinstance(value, bool):
            return explorer.codes[_integer(value, name, 0, len(explorer) - 1)]
        if isinstance(value, list):
            return torch.tensor(_vector(value, name, d))
        raise ApiError(f"{name} must be a test image index or a code of {d} numbers, not {_kind(value)}")

    async def interpolate(request: Request) -> JSONResponse:
        body = await _json(request, {"a": True, "b": True, "frames": False})
        frames = _integer(body.get("frames", 9), "frames", 2, MAX_FRAMES)
        return JSONResponse(explorer.interpolate(_end(body["a"], "a"), _end(body["b"], "b"), frames))

    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, exc.status)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"no such page: {request.url.path[:200]}" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message}, exc.status_code, headers=getattr(exc, "headers", None))

    async def user_error(request: Request, exc: AekitError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 400)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500)

    post = ["POST"]
    routes = [Route(path, asset) for path in ASSETS] + [
        Route("/api/info", info),
        Route("/api/map", latent_map),
        Route("/api/test/{index}", test_image),
        Route("/api/decode", decode, methods=post),
        Route("/api/decode-map", decode_map, methods=post),
        Route("/api/sample", sample, methods=post),
        Route("/api/analyze", analyze, methods=post),
        Route("/api/interpolate", interpolate, methods=post),
    ]
    handlers = {ApiError: api_error, HTTPException: http_error, AekitError: user_error, Exception: internal_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(_Guard, hosts=allowed_hosts(host))
    return app
