"""Offload: the real `python -m edge serve` on 127.0.0.1 (subprocess, self-signed TLS) and the client.

Nothing here asserts on timing except the issue's one explicit bar: with the server hung or killed
mid-request, the client's answer arrives within its deadline + 20 ms, from the on-device model.

The hung case is measured seven times, each beside a control that does the same work with no
network at all (the local model, then a plain wait for the rest of the deadline). On a quiet
machine the control ends at the deadline and the bar is exactly deadline + 20 ms; on a loaded one
(this 2-core machine shares its CPUs with training runs) the kernel wakes a thread late after a CPU
burst, the control shows by how much, and only that much is allowed on top. Medians, so one stall
does not decide; a client that overstays its deadline by 20 ms fails either way.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import statistics
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge.__main__ as entry
from edge.config import OffloadConfig, load_config
from edge.errors import ConfigError, ModelError, OffloadError
from edge.offload.client import CircuitBreaker, OffloadClient, OffloadingPipeline, crop_jpeg
from edge.offload.limits import RateLimiter
from edge.offload.server import Analyzer
from edge.results import LABELS, FaceResult, FrameResult, Position, labels_for
from edge.offload.tls import client_ssl, fingerprint
from edge.offload.tokens import TokenStore
from tests.test_app import HAPPY, FakePipeline, config, make_app, running
from tests.test_speech import VOICE as TEST_VOICE

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 0.3
BAR_S = DEADLINE_S + 0.020
"""The issue's bar: the answer arrives within the deadline + 20 ms."""
SERVER_VOICE = None if shutil.which("espeak-ng") else TEST_VOICE
"""The server's voice: espeak-ng as deployed, or, on a machine without it, the project's generated
Piper test voice, so the speech answers are still checked end to end instead of the module erroring."""



# --------------------------------------------------------------------------- helpers


def make_cert(folder: Path) -> tuple[Path, Path]:
    """The documented self-signed pair, for 127.0.0.1."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class Server:
    """`python -m edge serve` in a subprocess; its log is read on a thread (so the pipe never fills)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "serve", "--threads", "1", *args],
            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if "serving on" in line and self.port is None:
                self.port = int(line.rsplit(":", 1)[1])
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> int:
        assert self._ready.wait(120), "server did not start"
        assert self.port is not None, "\n".join(self.lines)
        return self.port

    def peak_rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])

    def access_log(self) -> list[dict]:
        return [json.loads(line.split("edge.offload.access: ", 1)[1]) for line in self.lines if "edge.offload.access: " in line]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def request(
    port: int, method: str, path: str, body=None, token: str | None = None, context: ssl.SSLContext | None = None, chunked: bool = False
) -> tuple[int, dict]:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    headers = {"Content-Type": "image/jpeg"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    try:
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG whose pixels would take width×height×3 bytes once decoded (compressed ~1000:1)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI needed to make a self-signed certificate")
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("tokens") / "offload_tokens"
    store = TokenStore(path)
    return path, {name: store.add(name) for name in ("main", "client", "ratelimited", "speech", "load", "classes")}


@pytest.fixture(scope="module")
def server(certs, tokens):
    cert, key = certs
    voice = ("--voice", str(SERVER_VOICE)) if SERVER_VOICE else ()
    process = Server("--port", "0", "--cert", str(cert), "--key", str(key), "--tokens", str(tokens[0]), "--rate", "0.5", "--burst", "8", *voice)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def tls(certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs[0]))


@pytest.fixture(scope="module")
def local_pipeline():
    from edge.pipeline import Pipeline

    with Pipeline(threads=1) as pipeline:
        yield pipeline


# --------------------------------------------------------------------------- tokens, limits, breaker


def test_token_add_prints_it_once_and_stores_only_its_hash(tmp_path, capsys):
    path = tmp_path / "tokens"
    assert entry.main(["token", "add", "glasses-anna", "--tokens", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    text = path.read_text()
    assert token not in text and "glasses-anna sha256:" in text
    assert path.stat().st_mode & 0o777 == 0o600
    store = TokenStore(path)
    assert store.check(token) == "glasses-anna"
    assert store.check(token[:-1]) is None and store.check("") is None
    assert entry.main(["token", "remove", "glasses-anna", "--tokens", str(path)]) == 0
    assert TokenStore(path).check(token) is None


def test_a_running_servers_token_store_sees_token_add_and_remove_without_a_restart(tmp_path):
    path = tmp_path / "tokens"
    server_side = TokenStore(path)  # as `edge serve` holds it
    assert server_side.check("anything") is None
    token = TokenStore(path).add("glasses-new")  # `edge token add`, another process
    assert server_side.check(token) == "glasses-new"
    assert entry.main(["token", "remove", "glasses-new", "--tokens", str(path)]) == 0
    assert server_side.check(token) is None
    kept = TokenStore(path).add("glasses-kept")
    assert server_side.check(kept) == "glasses-kept"
    path.write_text(path.read_text() + "half a line\n")  # a hand edit gone wrong: the last good tokens stay
    assert server_side.check(kept) == "glasses-kept"
    path.unlink()
    assert server_side.check(kept) is None


def test_token_list_says_when_there_are_none_and_the_folder_is_private(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert entry.main(["token", "list"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "no device tokens" in err and "python -m edge token add NAME" in err
    assert entry.main(["token", "add", "glasses-anna"]) == 0
    assert (tmp_path / "glasses").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "glasses" / "offload_tokens").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert entry.main(["token", "list"]) == 0
    assert capsys.readouterr() == ("glasses-anna\n", "")


def test_rate_limiter_is_per_token_bucket():
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # another device has its own bucket
    now[0] = 0.5
    assert limiter.take("a") == 0.0


def test_breaker_opens_on_failure_and_allows_a_trial_after_the_cool_down():
    now = [100.0]
    breaker = CircuitBreaker(30.0, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] += 29.9
    assert not breaker.allow()
    now[0] += 0.1
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and not breaker.is_open


def test_offload_config_is_safe_by_default():
    assert OffloadConfig().enabled is False
    with pytest.raises(ConfigError, match="plaintext http"):
        load_config(env={}, overrides={"offload.url": "http://10.0.0.2:8443"})
    allowed = load_config(env={}, overrides={"offload.url": "http://10.0.0.2:8443", "offload.allow_http": "true"})
    assert allowed.offload.allow_http
    with pytest.raises(ConfigError, match="needs offload.token"):
        load_config(env={}, overrides={"offload.enabled": "true", "offload.url": "https://10.0.0.2:8443"})
    with pytest.raises(ConfigError, match="64 hex"):
        load_config(env={}, overrides={"offload.pin_sha256": "abc"})


def test_crop_is_the_face_box_with_margin_and_stays_small(grace_hopper):
    data = crop_jpeg(grace_hopper, (169, 131, 188, 202))
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert max(crop.shape[:2]) == 256  # 188×202 plus 25 % margin each side, scaled down
    assert len(data) < len(jpeg(grace_hopper)) / 2


# --------------------------------------------------------------------------- the server's bars


def test_no_token_or_wrong_token_is_401(server, tls, tokens, grace_hopper):
    body = jpeg(grace_hopper)
    assert request(server.port, "POST", "/v1/analyze", body, None, tls)[0] == 401
    assert request(server.port, "POST", "/v1/analyze", body, tokens[1]["main"] + "x", tls)[0] == 401
    assert request(server.port, "POST", "/v1/analyze", body, "", tls)[0] == 401
    assert request(server.port, "GET", "/healthz", None, None, tls) == (200, {"status": "ok", "queue": 0, "workers": 1, "speech": True})


def test_plaintext_is_refused_unless_explicitly_allowed(server, tokens, tmp_path):
    with pytest.raises((http.client.HTTPException, OSError)):
        request(server.port, "GET", "/healthz", None, None, context=None)
    assert entry.main(["serve", "--port", "0", "--tokens", str(tokens[0])]) == 2  # no --cert/--key, no --insecure-http
    plain = Server("--port", "0", "--insecure-http", "--no-speech", "--idle-timeout", "1", "--tokens", str(tokens[0]))
    try:
        port = plain.wait_ready()
        with socket.create_connection(("127.0.0.1", port), timeout=15) as slow:  # trickles an unfinished header
            slow.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started = time.monotonic()
            assert slow.recv(1024) == b""  # closed by the server, not by our 15 s timeout
            assert time.monotonic() - started < 10
        assert request(port, "GET", "/healthz", None, None, context=None)[0] == 200
        assert any("PLAINTEXT" in line for line in plain.lines)
        status, answer = request(port, "POST", "/v1/analyze?speech=1", b"x", tokens[1]["main"], context=None)
        assert status == 400 and "--no-speech" in answer["error"]
    finally:
        plain.stop()


def test_body_over_2_mb_is_413(server, tls, tokens):
    status, answer = request(server.port, "POST", "/v1/analyze", os.urandom(3 * 1024 * 1024), tokens[1]["main"], tls)
    assert status == 413 and "limit" in answer["error"]


def test_chunked_body_over_2_mb_is_413(server, tls, tokens):
    """No Content-Length to refuse up front: the limit holds while the body is read."""
    chunks = (os.urandom(256 * 1024) for _ in range(12))
    status, answer = request(server.port, "POST", "/v1/analyze", chunks, tokens[1]["main"], tls, chunked=True)
    assert status == 413 and "limit" in answer["error"]


@pytest.mark.parametrize("width,height", [(20000, 20000), (5000, 5000)])
def test_png_decompression_bomb_is_400_without_decoding(server, tls, tokens, width, height):
    body = png_bomb(width, height)
    assert len(body) < 2 * 1024 * 1024
    before = server.peak_rss_kb()
    status, answer = request(server.port, "POST", "/v1/analyze", body, tokens[1]["main"], tls)
    assert status == 400, answer
    assert server.peak_rss_kb() - before < 100 * 1024  # decoded, 20000² × 3 bytes would be 1.2 GB
    assert server.proc.poll() is None


def test_not_an_image_is_400(server, tls, tokens):
    status, answer = request(server.port, "POST", "/v1/analyze", b"GIF89a not really", tokens[1]["main"], tls)
    assert status == 400 and "JPEG or PNG" in answer["error"]


def test_valid_face_is_200_with_the_local_models_label(server, tls, tokens, grace_hopper, local_pipeline):
    status, answer = request(server.port, "POST", "/v1/analyze", jpeg(grace_hopper), tokens[1]["main"], tls)
    assert status == 200, answer
    local = local_pipeline.analyze(cv2.imdecode(np.frombuffer(jpeg(grace_hopper), np.uint8), cv2.IMREAD_COLOR), lowlight=None).to_json()
    assert set(answer) == set(local) == {"faces", "lowlight", "timings_ms"}
    assert len(answer["faces"]) == len(local["faces"]) == 1
    assert answer["faces"][0]["label"] == local["faces"][0]["label"]
    assert answer["faces"][0]["box"] == local["faces"][0]["box"]
    assert set(answer["faces"][0]) == set(local["faces"][0])


def test_classes_5_is_answered_in_the_five_labels_and_another_value_is_400(server, tls, tokens, grace_hopper):
    body, token = jpeg(grace_hopper), tokens[1]["classes"]
    status, five = request(server.port, "POST", "/v1/analyze?classes=5", body, token, tls)
    assert status == 200, five
    seven = request(server.port, "POST", "/v1/analyze", body, token, tls)[1]["faces"][0]  # no classes: 7, as before
    five = five["faces"][0]
    assert list(five["scores"]) == list(labels_for(5)) and list(seven["scores"]) == list(LABELS)
    assert five["scores"]["angry_disgust"] == pytest.approx(seven["scores"]["angry"] + seven["scores"]["disgust"], abs=2e-4)
    assert five["label"] in labels_for(5) and five["box"] == seven["box"]
    status, answer = request(server.port, "POST", "/v1/analyze?classes=6", body, token, tls)
    assert status == 400 and answer == {"error": "classes='6': use 7 or 5 (the glasses' vision.classes)"}


def test_glasses_with_five_classes_get_the_servers_answer_in_five(server, certs, tokens, grace_hopper, tmp_path):
    from edge.pipeline import Pipeline

    token_file = tmp_path / "token"
    token_file.write_text(tokens[1]["classes"])
    settings = load_config(env={}, overrides={"offload.enabled": "true", "offload.url": f"https://127.0.0.1:{server.port}",
                                              "offload.token_file": str(token_file), "offload.ca_file": str(certs[0]),
                                              "offload.deadline_ms": "5000", "vision.classes": "5"})
    with Pipeline(threads=1, classes=5) as local, OffloadingPipeline.from_config(local, settings.offload, settings.vision.classes) as pipeline:
        result = pipeline.analyze(grace_hopper, lowlight=None)
        assert pipeline.offloaded == 1 and pipeline.take_notice() is None
        assert list(result.faces[0].scores) == list(labels_for(5)) and result.faces[0].label in labels_for(5)


def test_speech_is_the_wearers_phrase_with_its_audio_from_the_project_voice(server, tls, tokens, grace_hopper):
    from edge.speech.phrases import describe
    from edge.speech.tts import AudioClip, PhraseCache, load_voice

    for verbosity in ("terse", "verbose"):
        status, answer = request(server.port, "POST", f"/v1/analyze?speech=1&verbosity={verbosity}", jpeg(grace_hopper), tokens[1]["speech"], tls)
        assert status == 200, answer
        faces = tuple(
            FaceResult(tuple(f["box"]), f["label"], f["confidence"], f["unsure"], f["scores"], Position(**f["position"]), f["fallback"])
            for f in answer["faces"]
        )  # fmt: skip
        text = describe(FrameResult(faces=faces, lowlight=answer["lowlight"]), verbosity)
        speech = answer["speech"]
        assert speech["text"] == text and speech["format"] == "audio/wav"
        clip = AudioClip.from_wav_bytes(base64.b64decode(speech["wav_base64"]))
        assert clip.sample_rate == speech["sample_rate"] and clip.duration_s == pytest.approx(speech["duration_s"], abs=1e-3)
        with load_voice(SERVER_VOICE) as voice:  # the server's voice, default rate, phrases composed the same way
            expected = PhraseCache(voice).compose(text)
        assert np.array_equal(clip.samples, expected.samples)
        assert np.abs(clip.samples.astype(np.int32)).max() > 1000  # not silence
    status, answer = request(server.port, "POST", "/v1/analyze", jpeg(grace_hopper), tokens[1]["speech"], tls)
    assert status == 200 and "speech" not in answer  # only when asked for
    for query in ("speech=maybe", "speech=1&verbosity=chatty", "lowlight=dusk"):
        status, answer = request(server.port, "POST", f"/v1/analyze?{query}", jpeg(grace_hopper), tokens[1]["speech"], tls)
        assert status == 400 and query.rsplit("&", 1)[-1].split("=")[0] in answer["error"]


def test_speech_cache_is_warm_before_the_server_listens(server):
    """The first ?speech=1 request waited ~0.6 s for the warm-up while /healthz already said ok."""
    warm = [i for i, line in enumerate(server.lines) if "speech cache warm:" in line]
    listening = [i for i, line in enumerate(server.lines) if "serving on" in line]
    assert warm and warm[0] < listening[0], server.lines


def test_server_logs_its_execution_provider_and_refuses_a_missing_gpu(server, certs, tokens, capsys):
    import onnxruntime

    assert any("expression model onnx-fp32 on CPUExecutionProvider" in line for line in server.lines)
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a CUDA onnxruntime")
    cert, key = certs
    assert entry.main(["serve", "--device", "cuda", "--cert", str(cert), "--key", str(key), "--tokens", str(tokens[0])]) == 2
    assert "onnxruntime-gpu" in capsys.readouterr().err


def test_server_without_a_voice_says_how_to_start_anyway(certs, tokens, monkeypatch, capsys):
    import edge.speech.tts

    monkeypatch.setattr(edge.speech.tts.shutil, "which", lambda name: None)  # no espeak-ng
    cert, key = certs
    assert entry.main(["serve", "--port", "0", "--cert", str(cert), "--key", str(key), "--tokens", str(tokens[0])]) == 2
    err = capsys.readouterr().err
    assert "espeak-ng not found" in err and "--no-speech" in err


def test_onnx_providers_use_cuda_only_when_this_onnxruntime_has_it(monkeypatch):
    import onnxruntime

    from edge.runtime import OnnxBackend, onnx_providers
    from edge.vision.expression import MODELS_DIR

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers("auto") == onnx_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="install onnxruntime-gpu"):
        onnx_providers("cuda")
    with pytest.raises(ModelError, match="choose one of"):
        onnx_providers("tpu")
    monkeypatch.undo()
    model = OnnxBackend(MODELS_DIR / "expression.fp32.onnx", threads=1, providers=onnx_providers("auto"))
    assert model.providers[-1] == "CPUExecutionProvider"


def test_workers_each_own_a_pipeline_and_run_at_once():
    """Two workers must analyse two requests concurrently, each on its own pipeline (they are not thread-safe)."""
    barrier = threading.Barrier(2, timeout=10)
    users: dict[int, set[int]] = {}

    class Slow:
        def __init__(self) -> None:
            self.busy = threading.Lock()

        def analyze(self, frame, lowlight=None, track=False, classes=None):
            assert self.busy.acquire(blocking=False), "one pipeline used by two threads at once"
            try:
                users.setdefault(id(self), set()).add(threading.get_ident())
                barrier.wait()  # breaks (BrokenBarrierError) unless both requests are in here together
                return HAPPY
            finally:
                self.busy.release()

    analyzer = Analyzer([Slow(), Slow()])
    try:
        image = jpeg(np.zeros((8, 8, 3), np.uint8))
        futures = [analyzer.executor.submit(analyzer.run, image, None) for _ in range(4)]
        assert [f.result(20) for f in futures] == [HAPPY] * 4
    finally:
        analyzer.close()
    assert len(users) == 2


def test_rate_limit_per_token_is_429(server, tls, tokens):
    statuses = [request(server.port, "POST", "/v1/analyze", b"x", tokens[1]["ratelimited"], tls)[0] for _ in range(12)]
    assert statuses[:8] == [400] * 8  # the burst, each refused for its body
    assert 429 in statuses[8:]
    assert request(server.port, "POST", "/v1/analyze", b"x", tokens[1]["main"], tls)[0] == 400  # other devices unaffected


def test_load_test_is_bounded_and_reports_throughput_and_percentiles(server, certs, tokens):
    import asyncio

    from edge.offload import loadtest

    body = loadtest.payload(None, full=False)  # the glasses' own face crop
    height, width = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    assert height == 256 and abs(width - 239) <= 3  # the face box, long side 256 (a pixel either way with the mesh)
    url, ssl_arg = f"https://127.0.0.1:{server.port}", client_ssl(ca_file=str(certs[0]))
    closed = asyncio.run(loadtest.run(url, tokens[1]["load"], ssl_arg, body, count=5, concurrency=2, server_pid=server.proc.pid))
    opened = asyncio.run(loadtest.run(url, tokens[1]["load"], ssl_arg, body, count=3, arrival_rate=50.0))
    for report, count in ((closed, 5), (opened, 3)):
        assert report["statuses"] == {"200": count}  # stopped by itself after exactly `count`
        assert report["ok_per_s"] == report["requests_per_s"] > 0
        assert 0 < report["server_pipeline_ms"]["p50"] <= report["ok_latency_ms"]["p50"] <= report["ok_latency_ms"]["p95"]
    assert closed["mode"] == "closed" and opened["mode"] == "open" and opened["server"]["workers"] == 1
    assert closed["server_cpu_ms_per_request"] > 0 and opened["server_cpu_ms_per_request"] is None


def test_access_log_is_one_json_line_per_request_without_image_data(server, tls, tokens):
    request(server.port, "GET", "/healthz", None, None, tls)
    request(server.port, "POST", "/v1/analyze", b"not logged", tokens[1]["main"], tls)
    time.sleep(0.2)  # the log line is written after the response
    log = server.access_log()
    assert log and all(set(entry) == {"remote", "device", "method", "path", "status", "bytes_in", "bytes_out", "ms"} for entry in log)
    assert {"main", "-"} <= {entry["device"] for entry in log}
    assert not any(token in line for line in server.lines for token in tokens[1].values())
    assert not any("not logged" in line for line in server.lines)  # no body bytes


# --------------------------------------------------------------------------- the client


def test_client_offloads_with_a_pinned_certificate_and_falls_back_on_a_wrong_pin(server, certs, tokens, grace_hopper, local_pipeline, tmp_path):
    local = local_pipeline.analyze(grace_hopper, lowlight=None)
    url = f"https://127.0.0.1:{server.port}"
    token_file = tmp_path / "token"
    token_file.write_text(tokens[1]["client"] + "\n")
    openssl_style = ":".join(f"{b:02X}" for b in bytes.fromhex(fingerprint(certs[0])))  # openssl x509 -fingerprint -sha256
    settings = load_config(
        env={},
        overrides={"offload.enabled": "true", "offload.url": url, "offload.token_file": str(token_file), "offload.pin_sha256": openssl_style, "offload.deadline_ms": "5000"},
    )
    with OffloadingPipeline.from_config(local_pipeline, settings.offload) as pipeline:
        assert pipeline.deadline_s == 5.0
        result = pipeline.analyze(grace_hopper, lowlight=None)
        assert pipeline.offloaded == 1 and "offload" in result.timings_ms
        assert [f.label for f in result.faces] == [f.label for f in local.faces]
        assert result.faces[0].box == local.faces[0].box
        assert pipeline.take_notice() is None
    crop = crop_jpeg(grace_hopper, local.faces[0].box)
    deadline = time.monotonic() + 5
    while not [e for e in server.access_log() if e["device"] == "client"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the access line is written just after the answer
    sent = [e["bytes_in"] for e in server.access_log() if e["device"] == "client"]
    assert sent == [len(crop)] and len(crop) < len(jpeg(grace_hopper)) / 2  # the face crop went, not the frame
    wrong = bytes(32)
    with OffloadingPipeline(local_pipeline, OffloadClient(url, tokens[1]["client"], client_ssl(pin=wrong)), deadline_s=5.0) as pipeline:
        result = pipeline.analyze(grace_hopper, lowlight=None)
        assert pipeline.offloaded == 0 and result.faces == local.faces
        assert pipeline.take_notice() == "offload unavailable"
        assert pipeline.breaker.is_open
        pipeline.analyze(grace_hopper, lowlight=None)
        assert pipeline.take_notice() is None  # told once


@pytest.mark.parametrize("trust", ["own CA, wrong token", "system CAs (self-signed not trusted)"])
def test_client_with_a_wrong_token_or_an_untrusted_certificate_answers_locally(server, certs, tokens, grace_hopper, local_pipeline, trust, caplog):
    token, ssl_arg = ("not-a-token", client_ssl(ca_file=str(certs[0]))) if trust.startswith("own") else (tokens[1]["client"], client_ssl())
    client = OffloadClient(f"https://127.0.0.1:{server.port}", token, ssl_arg)
    with OffloadingPipeline(local_pipeline, client, deadline_s=5.0) as pipeline:
        result = pipeline.analyze(grace_hopper, lowlight=None)
    assert pipeline.offloaded == 0 and "offload" not in result.timings_ms
    assert result.faces == local_pipeline.analyze(grace_hopper, lowlight=None).faces
    assert pipeline.take_notice() == "offload unavailable"
    assert ("401" if trust.startswith("own") else "not trusted") in caplog.text


def timed(pipeline: OffloadingPipeline, image: np.ndarray) -> tuple[FrameResult, float]:
    start = time.perf_counter()
    result = pipeline.analyze(image, lowlight=None)
    return result, time.perf_counter() - start


def resume(pipeline: OffloadingPipeline, image: np.ndarray, tries: int = 3) -> int:
    """Presses until one is answered by the server again, each after the breaker's cool-down; how many it took.

    More than one only on a loaded machine, where a server catching up on its backlog can miss one
    300 ms deadline: the glasses then simply try again after the next cool-down."""
    for attempt in range(1, tries + 1):
        while not pipeline.breaker.allow():
            time.sleep(0.05)
        if "offload" in pipeline.analyze(image, lowlight=None).timings_ms:
            return attempt
    raise AssertionError(f"offload did not resume in {tries} tries")


def control(local_pipeline, image: np.ndarray, deadline_s: float) -> float:
    """The client's work with no network: the local model, then a plain wait until the deadline."""
    start = time.perf_counter()
    local_pipeline.analyze(image, lowlight=None)
    threading.Event().wait(max(0.0, deadline_s - (time.perf_counter() - start)))
    return time.perf_counter() - start


def test_server_hung_or_killed_mid_request_answer_within_deadline_then_offload_resumes(certs, tokens, grace_hopper, local_pipeline):
    cert, key = certs
    args = ("--cert", str(cert), "--key", str(key), "--tokens", str(tokens[0]), "--no-speech")
    server = Server("--port", "0", *args)
    tls = ssl.create_default_context(cafile=str(cert))
    try:
        port = server.wait_ready()
        assert request(port, "POST", "/v1/analyze", jpeg(grace_hopper), tokens[1]["client"], tls)[0] == 200  # warm, not timed
        local = local_pipeline.analyze(grace_hopper, lowlight=None)

        def client() -> OffloadClient:
            return OffloadClient(f"https://127.0.0.1:{port}", tokens[1]["client"], client_ssl(ca_file=str(cert)))

        # Hung: the real server frozen (SIGSTOP) keeps every connection open and never answers.
        with OffloadingPipeline(local_pipeline, client(), deadline_s=DEADLINE_S, breaker=CircuitBreaker(0.0)) as pipeline:
            resume(pipeline, grace_hopper)  # connected and answering
            server.proc.send_signal(signal.SIGSTOP)
            hung_s, control_s = [], []
            for _ in range(7):
                control_s.append(control(local_pipeline, grace_hopper, DEADLINE_S))
                result, elapsed = timed(pipeline, grace_hopper)
                assert result.faces == local.faces and "offload" not in result.timings_ms
                hung_s.append(elapsed)
            server.proc.send_signal(signal.SIGCONT)
            resume(pipeline, grace_hopper)  # back: with no cool-down, the next press
        machine_late_s = max(0.0, statistics.median(control_s) - DEADLINE_S)
        assert statistics.median(hung_s) <= BAR_S + machine_late_s, (
            f"answers after {[round(t * 1e3, 1) for t in hung_s]} ms; plain waits ended {[round(t * 1e3, 1) for t in control_s]} ms"
        )
        assert min(hung_s) >= DEADLINE_S - 0.005  # it did wait for the server, up to the deadline

        # Killed mid-request: a request is waiting on the frozen server when it is SIGKILLed.
        breaker = CircuitBreaker(cooldown_s=1.0)
        with OffloadingPipeline(local_pipeline, client(), deadline_s=DEADLINE_S, breaker=breaker) as pipeline:
            resume(pipeline, grace_hopper)
            server.proc.send_signal(signal.SIGSTOP)
            answer: list = []
            caller = threading.Thread(target=lambda: answer.append(timed(pipeline, grace_hopper)))
            caller.start()
            time.sleep(0.15)  # local model done (~15 ms), request sent and waiting
            server.kill()
            caller.join(5)
            result, killed_s = answer[0]
            assert killed_s <= BAR_S, f"answer after {killed_s * 1e3:.1f} ms"
            assert result.faces == local.faces and "offload" not in result.timings_ms
            assert pipeline.take_notice() == "offload unavailable"
            assert breaker.is_open and not breaker.allow()

            pipeline.analyze(grace_hopper, lowlight=None)  # breaker open: not even tried
            assert pipeline.take_notice() is None

            server = Server("--port", str(port), *args)
            server.wait_ready()
            assert request(port, "POST", "/v1/analyze", jpeg(grace_hopper), tokens[1]["client"], tls)[0] == 200
            offloaded = pipeline.offloaded
            tries = resume(pipeline, grace_hopper)
            assert pipeline.offloaded == offloaded + 1
            assert pipeline.take_notice() == "offload back"  # once, however many tries it took
        print(
            f"deadline {DEADLINE_S * 1e3:.0f} ms: hung server {', '.join(f'{t * 1e3:.1f}' for t in hung_s)} ms "
            f"(control {', '.join(f'{t * 1e3:.1f}' for t in control_s)} ms); killed mid-request {killed_s * 1e3:.1f} ms; resumed on try {tries}"
        )
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


# --------------------------------------------------------------------------- the wearer loop


class ScriptedClient:
    """Stands in for OffloadClient: fails while `down`, else answers like the server would."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def analyze(self, crops, lowlight, timeout_s):
        self.calls += 1
        if self.down:
            raise OffloadError("connection refused")
        return [{"faces": [{"box": [0, 0, 40, 40], "label": "sad", "confidence": 0.8, "unsure": False, "scores": {"sad": 0.8}, "fallback": False}]} for _ in crops]

    def close(self) -> None:
        pass


def test_wearer_hears_offload_unavailable_once_and_back_once():
    client = ScriptedClient()
    pipeline = OffloadingPipeline(FakePipeline(HAPPY), client, deadline_s=5.0, breaker=CircuitBreaker(0.0))
    app, sink, _ = make_app(config(), pipeline)
    with running(app):
        for _ in range(3):
            app.press()
            assert sink.wait_said("looks happy", times=_ + 1)  # answered on the device every time
        assert sink.wait_said("offload unavailable")
        client.down = False
        app.press()
        assert sink.wait_said("looks sad")  # the server's reading
        assert sink.wait_said("offload back")
    assert client.calls == 4
    assert sink.played.count("offload unavailable") == 1 and sink.played.count("offload back") == 1
    assert sink.played.index("offload unavailable") > sink.played.index("looks happy")



@pytest.mark.parametrize("answer", [{"faces": [{"box": [0, 0, 9, 9]}]}, {"faces": [{"box": [0, 0, 9, 9], "label": "bored", "confidence": 1, "unsure": False, "scores": {}}]}, {}])
def test_a_malformed_server_answer_is_a_failure_not_a_crash(answer):
    client = ScriptedClient()
    client.down = False
    client.analyze = lambda crops, lowlight, timeout_s: [answer for _ in crops]
    pipeline = OffloadingPipeline(FakePipeline(HAPPY), client, deadline_s=5.0)
    result = pipeline.analyze(np.zeros((48, 64, 3), np.uint8))
    assert result.faces == HAPPY.faces
    if answer:
        assert pipeline.take_notice() == "offload unavailable" and pipeline.breaker.is_open
    else:  # no face found in the crop: the local reading stands, and the server did answer
        assert pipeline.take_notice() is None and pipeline.offloaded == 1


def test_a_seven_class_answer_to_five_class_glasses_is_a_failure_not_spoken():
    """A server that ignores ?classes (an older one) answers in 7 labels: the glasses keep their own reading."""
    scores = {label: 0.1 for label in LABELS} | {"fear": 0.4}
    asked: list[str] = []

    def answer(crops, lowlight, timeout_s):
        label = "fear" if not asked else "happy"  # a 7-class label, then a 5-class one with 7-class scores
        asked.append(label)
        return [{"faces": [{"box": [0, 0, 9, 9], "label": label, "confidence": 0.4, "unsure": False, "scores": scores}]} for _ in crops]

    client = ScriptedClient()
    client.analyze = answer
    local = FrameResult(faces=(dataclasses.replace(HAPPY.faces[0], label="sad", scores={"sad": 0.9}),), lowlight=False)
    pipeline = OffloadingPipeline(FakePipeline(local), client, deadline_s=5.0, breaker=CircuitBreaker(0.0), classes=5)
    image = np.zeros((48, 64, 3), np.uint8)
    assert pipeline.analyze(image).faces == local.faces and pipeline.analyze(image).faces == local.faces
    assert asked == ["fear", "happy"] and pipeline.offloaded == 0
    assert pipeline.take_notice() == "offload unavailable"
    assert OffloadingPipeline(FakePipeline(local), client, deadline_s=5.0).analyze(image).faces[0].label == "happy"  # 7 classes take it


def test_continuous_ticks_stay_on_the_glasses_and_presses_go_out():
    client = ScriptedClient()
    client.down = False
    pipeline = OffloadingPipeline(FakePipeline(HAPPY), client, deadline_s=5.0)
    image = np.zeros((48, 64, 3), np.uint8)
    assert pipeline.analyze(image, track=True).faces == HAPPY.faces and client.calls == 0
    assert pipeline.analyze(image).faces[0].label == "sad" and client.calls == 1
