"""aekit serve: the explorer's computations, every API endpoint (good and bad requests) over a real server on
127.0.0.1, the page's assets and what it refuses to serve, and the CLI verb."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

import aekit
from aekit.cli import main
from aekit.serve import bind, make_explorer, start
from aekit.serve.app import MAX_BATCH, MAX_BODY_BYTES, MAX_FRAMES, MAX_UPLOAD_BYTES

N_MAP = 300  # test images on the map: enough for every check, fast to embed


@pytest.fixture(scope="module")
def vae():
    """The shipped MNIST VAE (32-D latent: the map is a PCA plane) over mnist-5k's test split."""
    return make_explorer(aekit.pretrained("mnist-vae"), data="mnist-5k", limit=N_MAP)


@pytest.fixture(scope="module")
def ae2(tmp_path_factory):
    """A tiny AE with a 2-D latent (the map is the latent itself)."""
    out = tmp_path_factory.mktemp("serve") / "ae2"
    run = aekit.train("ae", data="mnist-5k", latent_dim=2, hidden=(32,), epochs=1, out=out, progress=False)
    return make_explorer(run, limit=N_MAP)


@pytest.fixture(scope="module")
def server(vae):
    with start(vae) as running:
        yield running


def call(server, method: str, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None):
    """Send one request with the path exactly as given; returns (status, parsed JSON or text, headers)."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    headers = dict(headers or {})
    if body is not None:
        raw = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    try:
        connection.request(method, path, body=raw, headers=headers)
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("content-type", "")
        parsed = json.loads(data) if kind.startswith("application/json") else data.decode("utf-8", "replace")
        return response.status, parsed, response.headers
    finally:
        connection.close()


def post(server, path: str, body) -> tuple[int, dict]:
    status, data, _ = call(server, "POST", path, body)
    return status, data


def png_bytes(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes, url: bool = True) -> str:
    text = base64.b64encode(data).decode("ascii")
    return "data:image/png;base64," + text if url else text


def decode_png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as im:
        assert im.format == "PNG"
        return np.asarray(im)


def png_of(explorer, i: int) -> bytes:
    """Test image ``i`` as a PNG file."""
    return png_bytes(explorer.images[i, 0].numpy())


# ----- the explorer itself -----


def test_pca_map_goes_back_to_the_latent_through_the_same_projection(vae):
    info = vae.info()
    assert info["map"]["method"] == "pca" and "z = mean + x·PC1 + y·PC2" in info["map"]["how"]
    r1, r2 = vae.explained
    assert 0 < r2 <= r1 and r1 + r2 <= 1
    points = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float64)
    codes = vae.from_map(points)  # (2, 32)
    assert codes.shape == (2, 32)
    assert torch.allclose(vae.to_map(codes), points, atol=1e-5)  # map -> latent -> map is exact
    axes = vae.axes
    assert torch.allclose(axes @ axes.T, torch.eye(2, dtype=axes.dtype), atol=1e-9)  # orthonormal PCs
    residual = codes.double() - vae.mean - (codes.double() - vae.mean) @ axes.T @ axes
    assert residual.abs().max() < 1e-5  # decoded codes lie on the PCA plane
    # Test codes are drawn at their projection: PCA of the codes gives the same coordinates (up to sign).
    centred = vae.codes.double() - vae.codes.double().mean(0)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    assert torch.allclose((centred @ vt[:2].T).abs(), vae.points.abs(), atol=1e-6)


def test_2d_latent_is_its_own_map_and_sliders_follow_the_variance(ae2):
    assert ae2.info()["map"]["method"] == "latent" and ae2.explained is None
    assert torch.allclose(ae2.points, ae2.codes.double())
    p = torch.tensor([[1.25, -0.5]])
    assert torch.equal(ae2.from_map(p), p)
    variance = ae2.codes.var(0, unbiased=False)
    assert [s["dim"] for s in ae2.sliders] == variance.argsort(descending=True).tolist()
    for s in ae2.sliders:  # each range covers the 1st..99th percentile of that dimension
        j = s["dim"]
        assert s["min"] < float(torch.quantile(ae2.codes[:, j], 0.01)) < float(torch.quantile(ae2.codes[:, j], 0.99)) < s["max"]
    assert ae2.info()["slider_score"] == "variance"
    assert "fitted" in ae2.info()["sample_source"]


def test_vae_sliders_are_the_top_dimensions_by_kl(vae):
    model = vae.model
    with torch.inference_mode():
        kl = model.encode(model.prepare(vae.images)).kl_per_dim().mean(0)
    assert [s["dim"] for s in vae.sliders] == kl.argsort(descending=True)[:8].tolist()
    assert all(s["min"] == -3 and s["max"] == 3 for s in vae.sliders)
    scores = [s["score"] for s in vae.sliders]
    assert scores == sorted(scores, reverse=True)


def test_anomaly_score_ranks_against_the_test_errors(vae):
    image = vae.images[7:8]
    result = vae.analyze(image, noise_std=0.0)
    assert result["error"] == pytest.approx(float(vae.errors[7]), rel=1e-4)
    assert result["percentile"] == pytest.approx(100 * float((vae.errors < vae.errors[7]).float().mean()), abs=0.2)
    noise = torch.randint(0, 256, (1, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert vae.analyze(noise, noise_std=0.3)["percentile"] == 100.0  # noise is nothing like a digit
    assert vae.analyze(image, noise_std=0.0)["noisy"] == result["input"]  # sigma 0: no noise


def test_make_explorer_rejects_a_bad_limit():
    with pytest.raises(aekit.AekitError, match="--limit"):
        make_explorer(aekit.pretrained("mnist-ae"), data="mnist-5k", limit=0)


# ----- the page's files, and nothing else -----


def test_page_and_assets_with_security_headers(server):
    status, html, headers = call(server, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert '<script src="/app.js"' in html and '<canvas id="map"' in html
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, text, headers = call(server, "GET", path)
        assert status == 200 and headers["content-type"].startswith(kind) and len(text) > 1000


@pytest.mark.parametrize("path", [
    "/nope", "/index.html", "/static/app.js", "/../pyproject.toml", "/static/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "/app.js/../../../etc/passwd",
    "//etc/passwd", "/api/../../pyproject.toml", "/api/test/../../app.py", "/app.py", "/aekit/serve/app.py",
    "/api", "/api/", "/api/info/extra",
])
def test_unknown_paths_and_traversal_get_a_json_404(server, path):
    status, data, _ = call(server, "GET", path)
    assert status == 404, path
    assert data["error"].startswith("no such page")
    assert "root:" not in json.dumps(data) and "build-system" not in json.dumps(data)


def test_wrong_methods_get_405(server):
    assert call(server, "GET", "/api/decode")[0] == 405
    status, data, headers = call(server, "POST", "/api/info", {})
    assert status == 405 and "error" in data and "GET" in headers["allow"]
    assert call(server, "DELETE", "/")[0] == 405


def test_other_host_names_are_refused(server):
    port = urlsplit(server.url).port
    status, data, _ = call(server, "GET", "/api/info", headers={"Host": "attacker.example"})
    assert status == 400 and "unexpected Host" in data["error"]
    assert call(server, "GET", "/api/info", headers={"Host": f"localhost:{port}"})[0] == 200


# ----- the API: good requests -----


def test_info_and_map(server, vae):
    status, info, _ = call(server, "GET", "/api/info")
    assert status == 200
    assert info["name"] == "mnist-vae" and info["family"] == "vae" and info["variational"] is True
    assert info["latent_dim"] == 32 and info["image_shape"] == [1, 28, 28] and info["test_images"] == N_MAP
    assert info["map"]["method"] == "pca" and len(info["sliders"]) == 8 and info["slider_score"] == "KL"
    assert info["limits"] == {"max_batch": MAX_BATCH, "max_frames": MAX_FRAMES, "max_upload_bytes": MAX_UPLOAD_BYTES,
                              "max_abs": 1000.0}
    status, data, _ = call(server, "GET", "/api/map")
    assert status == 200 and len(data["points"]) == len(data["labels"]) == N_MAP
    assert np.allclose(data["points"], vae.points.numpy(), atol=1e-4)
    assert np.array(data["axes"]).shape == (2, 32) and len(data["mean"]) == 32
    assert set(data["labels"]) == set(range(10))


def test_decode_and_decode_map(server, vae):
    codes = vae.codes[:3].tolist()
    status, data = post(server, "/api/decode", {"codes": codes})
    assert status == 200 and len(data["images"]) == 3
    decoded = np.stack([decode_png(u) for u in data["images"]])
    expected = (vae.model.decode_images(torch.tensor(codes))[:, 0] * 255).round().numpy()
    assert decoded.shape == (3, 28, 28) and np.abs(decoded.astype(float) - expected).max() <= 1
    status, data = post(server, "/api/decode-map", {"points": [[0, 0], [1.5, -2]]})
    assert status == 200 and len(data["images"]) == 2
    assert np.allclose(data["codes"], vae.from_map(torch.tensor([[0, 0], [1.5, -2]])).numpy(), atol=1e-4)
    assert np.allclose(data["codes"][0], vae.mean.numpy(), atol=1e-4)  # the map's origin is the mean code
    assert post(server, "/api/decode", {"codes": [[0.0] * 32] * MAX_BATCH})[0] == 200


def test_sample_is_seeded(server):
    status, a = post(server, "/api/sample", {"n": 3, "seed": 5})
    assert status == 200 and len(a["images"]) == 3 and np.array(a["codes"]).shape == (3, 32)
    assert post(server, "/api/sample", {"n": 3, "seed": 5})[1]["codes"] == a["codes"]
    assert post(server, "/api/sample", {"n": 3, "seed": 6})[1]["codes"] != a["codes"]
    status, one = post(server, "/api/sample", {})
    assert status == 200 and len(one["images"]) == 1


def test_test_image(server, vae):
    status, data, _ = call(server, "GET", "/api/test/3")
    assert status == 200 and data["index"] == 3 and data["label"] == int(vae.labels[3])
    assert np.allclose(data["code"], vae.codes[3].numpy(), atol=1e-4)
    assert np.array_equal(decode_png(data["image"]), vae.images[3, 0].numpy())
    assert 0 <= data["percentile"] <= 100


def test_analyze_an_uploaded_test_image(server, vae):
    status, data = post(server, "/api/analyze", {"image": b64(png_of(vae, 4)), "noise_std": 0.0})
    assert status == 200
    assert np.array_equal(decode_png(data["input"]), vae.images[4, 0].numpy())
    assert np.array_equal(decode_png(data["noisy"]), decode_png(data["input"]))  # sigma 0
    recon = (vae.model.reconstruct(vae.images[4:5])[0, 0] * 255).round().numpy()
    assert np.abs(decode_png(data["reconstruction"]).astype(float) - recon).max() <= 1
    assert data["error"] == pytest.approx(float(vae.errors[4]), rel=1e-3)
    assert np.allclose(data["position"], vae.points[4].numpy(), atol=1e-3)
    assert np.allclose(data["code"], vae.codes[4].numpy(), atol=1e-4)
    noisy = post(server, "/api/analyze", {"image": b64(png_of(vae, 4), url=False), "noise_std": 0.5})[1]
    assert noisy["noisy"] != data["noisy"] and noisy["noise_std"] == 0.5


def test_the_error_map_shows_where_an_image_is_unlike_the_test_images(server, vae):
    """A digit with a bright square pasted in a corner: the map (inferno: bright = large error) is brightest there."""
    image = vae.images[4].clone()
    image[0, :7, :7] = 255
    png = io.BytesIO()
    Image.fromarray(image[0].numpy()).save(png, "PNG")
    data = post(server, "/api/analyze", {"image": b64(png.getvalue()), "noise_std": 0.0})[1]
    heat = decode_png(data["error_map"]).astype(float)
    assert heat.shape[:2] == (28, 28) and heat.ndim == 3  # RGB, the image's size
    assert heat[:7, :7].sum(-1).mean() > 2 * heat[10:, 10:].sum(-1).mean()


def test_analyze_converts_colour_size_alpha_and_inverts(server, vae):
    digit = vae.images[4, 0].numpy()
    big_rgb = np.repeat(np.kron(digit, np.ones((2, 2), dtype=np.uint8))[:, :, None], 3, axis=2)  # 56x56 RGB
    status, data = post(server, "/api/analyze", {"image": b64(png_bytes(big_rgb)), "noise_std": 0.0})
    assert status == 200 and decode_png(data["input"]).shape == (28, 28)
    assert np.abs(decode_png(data["input"]).astype(int) - digit).mean() < 8
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # white ink on a transparent background
    rgba[..., :3], rgba[..., 3] = 255, digit
    alpha = post(server, "/api/analyze", {"image": b64(png_bytes(rgba, "RGBA")), "noise_std": 0.0})[1]
    assert np.abs(decode_png(alpha["input"]).astype(int) - digit).max() <= 1  # composited onto black
    inverted = post(server, "/api/analyze",
                    {"image": b64(png_bytes(255 - digit)), "noise_std": 0.0, "invert": True})[1]
    assert np.array_equal(decode_png(inverted["input"]), digit)
    jpeg = post(server, "/api/analyze", {"image": b64(png_bytes(digit, fmt="JPEG")), "seed": 3})
    assert jpeg[0] == 200


def test_interpolate(server, vae):
    status, data = post(server, "/api/interpolate", {"a": 0, "b": 1, "frames": 5})
    assert status == 200 and len(data["images"]) == len(data["codes"]) == len(data["positions"]) == 5
    assert np.allclose(data["codes"][0], vae.codes[0].numpy(), atol=1e-4)
    assert np.allclose(data["codes"][-1], vae.codes[1].numpy(), atol=1e-4)
    assert np.allclose(data["codes"][2], ((vae.codes[0] + vae.codes[1]) / 2).numpy(), atol=1e-4)
    code = [0.5] * 32
    status, data = post(server, "/api/interpolate", {"a": code, "b": 2, "frames": MAX_FRAMES})
    assert status == 200 and len(data["images"]) == MAX_FRAMES and data["codes"][0] == code


# ----- the API: bad requests -----

D = 32
NOISE = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
BAD = [  # (path, body, status, part of the message)
    ("/api/decode", {}, 400, "missing field 'codes'"),
    ("/api/decode", {"codes": [[0.0] * D], "extra": 1}, 400, "unknown field 'extra'"),
    ("/api/decode", [[0.0] * D], 400, "must be a JSON object"),
    ("/api/decode", {"codes": "0,0"}, 400, "array of 1 to 64 rows"),
    ("/api/decode", {"codes": []}, 400, "array of 1 to 64 rows"),
    ("/api/decode", {"codes": [[0.0] * D] * (MAX_BATCH + 1)}, 400, "got 65 rows"),
    ("/api/decode", {"codes": [[0.0] * (D - 1)]}, 400, "array of 32 numbers (got 31 numbers)"),
    ("/api/decode", {"codes": [[0.0] * (D + 1)]}, 400, "array of 32 numbers (got 33 numbers)"),
    ("/api/decode", {"codes": [["0.5"] + [0.0] * (D - 1)]}, 400, "codes[0][0] must be a number, not a string"),
    ("/api/decode", {"codes": [[True] + [0.0] * (D - 1)]}, 400, "must be a number, not a boolean"),
    ("/api/decode", {"codes": [[None] * D]}, 400, "must be a number, not null"),
    ("/api/decode", {"codes": [[1e6] + [0.0] * (D - 1)]}, 400, "finite number in [-1000, 1000]"),
    ("/api/decode", {"codes": [[10**400] + [0.0] * (D - 1)]}, 400, "finite number in [-1000, 1000]"),
    ("/api/decode-map", {"points": [[0.0, 0.0, 0.0]]}, 400, "array of 2 numbers (got 3 numbers)"),
    ("/api/decode-map", {"points": [[0.0]]}, 400, "array of 2 numbers (got 1 numbers)"),
    ("/api/decode-map", {"points": [{"x": 0, "y": 0}]}, 400, "array of 2 numbers (got an object)"),
    ("/api/sample", {"n": 0}, 400, "n must be in 1..64"),
    ("/api/sample", {"n": MAX_BATCH + 1}, 400, "n must be in 1..64"),
    ("/api/sample", {"n": "3"}, 400, "n must be an integer, not a string"),
    ("/api/sample", {"n": 2.0}, 400, "n must be an integer, not a number"),
    ("/api/sample", {"seed": -1}, 400, "seed must be in 0.."),
    ("/api/interpolate", {"a": 0, "b": 1, "frames": 1}, 400, "frames must be in 2..32"),
    ("/api/interpolate", {"a": 0, "b": 1, "frames": MAX_FRAMES + 1}, 400, "frames must be in 2..32"),
    ("/api/interpolate", {"a": 0, "b": 1, "frames": 2.5}, 400, "frames must be an integer"),
    ("/api/interpolate", {"a": 0}, 400, "missing field 'b'"),
    ("/api/interpolate", {"a": -1, "b": 1}, 400, f"a must be in 0..{N_MAP - 1}"),
    ("/api/interpolate", {"a": 0, "b": N_MAP}, 400, f"b must be in 0..{N_MAP - 1}"),
    ("/api/interpolate", {"a": [0.0] * 3, "b": 1}, 400, "a must be an array of 32 numbers"),
    ("/api/interpolate", {"a": "first", "b": 1}, 400, "a must be a test image index or a code of 32 numbers"),
    ("/api/interpolate", {"a": True, "b": 1}, 400, "a must be a test image index or a code"),
    ("/api/analyze", {}, 400, "missing field 'image'"),
    ("/api/analyze", {"image": 12}, 400, "image must be a base64 string or data URL, not a number"),
    ("/api/analyze", {"image": "data:image/png;base64,@@not base64@@"}, 400, "not valid base64"),
    ("/api/analyze", {"image": ""}, 400, "image is empty"),
    ("/api/analyze", {"image": b64(b"hello, not an image")}, 415, "not a readable PNG/JPEG/GIF/BMP/WEBP image"),
    ("/api/analyze", {"image": b64(png_bytes(NOISE)[:400])}, 415, "not a readable"),  # truncated
    ("/api/analyze", {"image": b64(png_bytes(np.zeros((28, 28), np.uint8), fmt="TIFF"))}, 415, "not a readable"),
    ("/api/analyze", {"image": b64(png_bytes(np.zeros((4100, 4100), np.uint8)))}, 413, "the limit is 4096x4096"),
    ("/api/analyze", {"image": b64(png_bytes(np.zeros((28, 28), np.uint8))), "noise_std": -0.1}, 400, "noise_std"),
    ("/api/analyze", {"image": b64(png_bytes(np.zeros((28, 28), np.uint8))), "noise_std": 1.5}, 400, "[0, 1]"),
    ("/api/analyze", {"image": b64(png_bytes(np.zeros((28, 28), np.uint8))), "noise_std": "0.3"}, 400, "a string"),
    ("/api/analyze", {"image": b64(png_bytes(np.zeros((28, 28), np.uint8))), "invert": "yes"}, 400, "true or false"),
]


@pytest.mark.parametrize("path, body, status, message", BAD, ids=[f"{p}:{m[:40]}" for p, _, _, m in BAD])
def test_bad_requests_get_4xx_and_a_json_error(server, path, body, status, message):
    got, data = post(server, path, body)
    assert got == status, data
    assert message in data["error"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(server, literal):
    raw = f'{{"codes": [[{literal}{", 0" * (D - 1)}]]}}'.encode()
    status, data, _ = call(server, "POST", "/api/decode", raw=raw, headers={"content-type": "application/json"})
    assert status == 400 and f"{literal.lstrip('-')} is not a number JSON allows" in data["error"]
    raw = b'{"points": [[1e999, 0]]}'  # parses to inf in Python
    status, data, _ = call(server, "POST", "/api/decode-map", raw=raw, headers={"content-type": "application/json"})
    assert status == 400 and "finite number" in data["error"]


def test_bodies_must_be_json_and_not_too_large(server):
    for raw, kind, status, message in [
        (b"codes=1", "application/x-www-form-urlencoded", 415, "application/json"),
        (b'{"codes": [[0]]}', "text/plain", 415, "application/json"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[" * 100_000, "application/json", 400, "not valid JSON"),  # nesting too deep
        (b"", "application/json", 400, "not valid JSON"),
    ]:
        got, data, _ = call(server, "POST", "/api/decode", raw=raw, headers={"content-type": kind})
        assert got == status and message in data["error"], (raw[:20], data)
    got, data, _ = call(server, "POST", "/api/decode", headers={"content-type": "application/json"})
    assert got == 400  # no body at all
    big = b" " * (MAX_BODY_BYTES + 1)
    got, data, _ = call(server, "POST", "/api/decode", raw=big, headers={"content-type": "application/json"})
    assert got == 413 and "larger than 4 MiB" in data["error"]
    chunks = (b" " * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 1))  # chunked: no Content-Length to check
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("POST", "/api/decode", body=chunks, headers={"content-type": "application/json"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "larger than" in json.loads(response.read())["error"]
    connection.close()


def test_uploads_over_the_byte_cap_are_refused(server):
    data = np.random.default_rng(0).integers(0, 256, MAX_UPLOAD_BYTES + 1024, dtype=np.uint8).tobytes()
    status, answer = post(server, "/api/analyze", {"image": b64(data)})
    assert status == 413 and "2 MiB upload limit" in answer["error"]


@pytest.mark.parametrize("index", ["300", "-1", "abc", "1e3", "3.0", "99999999999999999999"])
def test_test_image_index_is_checked(server, index):
    status, data, _ = call(server, "GET", f"/api/test/{index}")
    assert status == 404 and "index must be an integer in 0..299" in data["error"]


def test_server_stays_up_after_bad_requests(server):
    for body in ({"codes": [["x"]]}, {"codes": [[float("nan")] * D]}, {"nope": 1}):
        assert post(server, "/api/decode", body)[0] == 400
    status, data = post(server, "/api/decode", {"codes": [[0.0] * D]})
    assert status == 200 and len(data["images"]) == 1


# ----- the CLI -----


def test_cli_errors_are_one_line(capsys):
    busy = bind("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        assert main(["serve", "--pretrained", "mnist-vae", "--data", "mnist-5k", "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err == f"aekit: error: cannot listen on 127.0.0.1:{port}: the port is in use (pick another --port)\n"
    finally:
        busy.close()
    for argv, message in [
        (["serve"], "serve needs a run folder (RUN) or --pretrained NAME"),
        (["serve", "--pretrained", "mnist-vae", "--port", "70000"], "--port must be between 0 and 65535"),
        (["serve", "--pretrained", "mnist-vae", "--host", "no-such-host.invalid"], "not an address"),
        (["serve", "--pretrained", "mnist-vae", "--data", "mnist-5k", "--port", "0", "--limit", "0"], "--limit"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert re.match(r"aekit( serve)?: error: ", err) and message in err and err.count("\n") == 1, err


def test_cli_serves_until_ctrl_c():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "aekit", "serve", "--pretrained", "mnist-ae", "--data", "mnist-5k", "--limit", "50",
         "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [process.stderr.readline(), process.stderr.readline()]
        match = re.search(r"open (http://127\.0\.0\.1:\d+/)", lines[1])
        assert "mnist-ae on 50 test images of mnist-5k" in lines[0] and match, lines
        address = urlsplit(match.group(1))
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        connection.request("GET", "/api/info")
        info = json.loads(connection.getresponse().read())
        connection.close()
        assert info["name"] == "mnist-ae" and info["test_images"] == 50 and info["slider_score"] == "variance"
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.returncode == 0
        rest = process.stderr.read()
        assert "explorer stopped" in rest and "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


# ----- a model with a spatial latent: RGB photos of any size -----


@pytest.mark.parametrize("family", ["ae", "vae"])
def test_the_explorer_serves_a_spatial_rgb_model_and_takes_photos_at_their_size(family, tmp_path):
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos.npy"
    np.save(photos, rng.integers(0, 256, (40, 3, 16, 16), dtype=np.uint8))
    run = aekit.train(family, arch="resnet", hidden=(8, 16), latent_channels=2, data=str(photos), epochs=1,
                      batch_size=20, out=tmp_path / "run", progress=False, log=None)
    explorer = make_explorer(run)
    assert explorer.info()["latent_dim"] == 2 * 4 * 4 and len(explorer.map()["points"]) == 4
    sample = explorer.sample(3, seed=1)
    assert len(sample["codes"][0]) == 32 and decode_png(sample["images"][0]).shape == (16, 16, 3)
    assert decode_png(explorer.decode_map(torch.zeros(1, 2))["images"][0]).shape == (16, 16, 3)
    with start(explorer) as running:
        wide = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        status, data = post(running, "/api/analyze", {"image": b64(png_bytes(wide)), "noise_std": 0.1})
        assert status == 200, data
        assert decode_png(data["reconstruction"]).shape == (24, 40, 3) == decode_png(data["input"]).shape
        assert data["position"] is None and data["code"] is None and data["size"] == [24, 40]
        status, data = post(running, "/api/analyze", {"image": b64(png_of_rgb(explorer, 0))})
        assert status == 200 and len(data["position"]) == 2 and len(data["code"]) == 32  # the training size: mapped
        big = np.zeros((600, 2400, 3), dtype=np.uint8)
        status, data = post(running, "/api/analyze", {"image": b64(png_bytes(big))})
        assert status == 200 and data["size"] == [256, 1024]  # scaled to 1,024 on its longer side


def png_of_rgb(explorer, i: int) -> bytes:
    return png_bytes(explorer.images[i].permute(1, 2, 0).numpy())
