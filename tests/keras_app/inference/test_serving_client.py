"""REST and gRPC clients, and `predict --server/--grpc`, against loopback fakes of TF Serving.

The TF Serving binary cannot be installed here, so each fake does what the
server does with a request: loads the exported version with TensorFlow alone,
turns the request (JSON row format with `{"b64": ...}`, or a PredictRequest)
into a call of the named signature, and answers in the server's format.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from keras_app import predict
from keras_app.artifacts.loader import load_model
from keras_app.core.cli import run_cli
from keras_app.core.errors import UsageError
from keras_app.inference import export
from keras_app.inference import predictor as inference
from keras_app.inference.serving_client import GrpcClient, RestClient, Scores
from tests.keras_app.inference.test_export import (
    CLASS_NAMES,
    png_bytes,
    sample_images,
    write_ensemble,
    write_run,
)

MAX_BODY = 16 * 2**20  # the fake refuses larger requests rather than read without bound


class NotFound(Exception):
    pass


class FakeModelServer:
    """Exported versions under `base`, loaded with tf.saved_model.load, called by signature."""

    def __init__(self, base: Path):
        self.base = base
        self._loaded = {}
        self._lock = threading.Lock()

    def signature(self, name: str, version: int | None, signature: str):
        """The signature function, as the server resolves it (latest version when None)."""
        try:
            path = inference.resolve_version(self.base / name, version)
        except UsageError as err:
            raise NotFound(f"Servable not found for request: {name} ({err})") from None
        with self._lock:
            if path not in self._loaded:
                self._loaded[path] = tf.saved_model.load(str(path))
            loaded = self._loaded[path]
        if signature not in loaded.signatures:
            raise NotFound(f'Serving signature name: "{signature}" not found in signature def')
        return loaded.signatures[signature]

    def call(self, name: str, version: int | None, signature: str, inputs: dict) -> dict:
        fn = self.signature(name, version, signature)
        specs = fn.structured_input_signature[1]
        tensors = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in fn(**tensors).items()}

    def rest_predict(self, path: str, body: dict) -> tuple[int, dict]:
        """POST /v1/models/NAME[/versions/N]:predict, row format in and out."""
        match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:predict", path)
        if not match:
            return 404, {"error": f"Malformed request: POST {path}"}
        name, version = match.group(1), match.group(2) and int(match.group(2))
        signature = body.get("signature_name", "serving_default")
        try:
            specs = self.signature(name, version, signature).structured_input_signature[1]
            if len(specs) != 1:
                return 400, {"error": "the fake takes signatures with one input only"}
            [input_name] = specs
            # One named input: each instance is that input's value; binary as {"b64": ...}.
            values = [_from_json(v) for v in body["instances"]]
            outputs = self.call(name, version, signature, {input_name: values})
        except NotFound as err:
            return 404, {"error": str(err)}
        except (tf.errors.InvalidArgumentError, ValueError, KeyError) as err:
            return 400, {"error": str(err).splitlines()[0]}
        return 200, {
            "predictions": [
                {k: _to_json(v[i]) for k, v in outputs.items()} for i in range(len(values))
            ]
        }


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    return value


def _to_json(value):
    if isinstance(value, np.ndarray):
        return [_to_json(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if isinstance(value, np.generic) else value


def _handler(server: FakeModelServer):
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a connection may idle: a stuck client cannot hold a thread

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._answer(413, {"error": f"request of {length} bytes is too large"})
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as err:
                return self._answer(400, {"error": f"JSON Parse error: {err}"})
            self._answer(*server.rest_predict(self.path, body))

        def _answer(self, status: int, payload: dict):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


class FakePredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: FakeModelServer, delay: float = 0.0):
        self.server, self.delay = server, delay

    def Predict(self, request, context):
        time.sleep(self.delay)
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = self.server.call(
                spec.name, version, spec.signature_name or "serving_default", inputs
            )
        except NotFound as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except (tf.errors.InvalidArgumentError, ValueError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err).splitlines()[0])
        response = predict_pb2.PredictResponse()
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    run, ensemble = write_run(root / "run"), write_ensemble(root / "ensemble")
    base = root / "saved_models"
    export.export_model(run, "pneumonia", base=base)
    export.export_model(ensemble, "pneumonia-ensemble", base=base)
    images = root / "images"
    images.mkdir()
    for i, data in enumerate(png_bytes(sample_images(3))):
        (images / f"x{i}.png").write_bytes(data)
    return {"run": run, "ensemble": ensemble, "base": base, "images": images}


@pytest.fixture(scope="module")
def rest_url(exported):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeModelServer(exported["base"])))
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def start_grpc(base: Path, delay: float = 0.0):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        FakePredictionService(FakeModelServer(base), delay), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def grpc_target(exported):
    server, target = start_grpc(exported["base"])
    yield target
    server.stop(grace=None)


def keras_probabilities(folder: Path, images: np.ndarray) -> np.ndarray:
    return load_model(folder)(images.astype(np.float32), training=False).numpy()


def predict_json(capsys, argv) -> list[dict]:
    assert run_cli(predict.main, [*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# --- the request itself ---------------------------------------------------------------------------


def test_rest_body_is_tf_serving_row_format_for_one_named_input():
    client = RestClient("http://serving:8501/", "pneumonia", 3)
    assert client.predict_url == "http://serving:8501/v1/models/pneumonia/versions/3:predict"
    assert RestClient("http://s:8501").predict_url == "http://s:8501/v1/models/pneumonia:predict"
    assert client.bytes_request([b"abc", b"\xff"]) == {
        "signature_name": "predict_image_bytes",
        "instances": [{"b64": "YWJj"}, {"b64": "/w=="}],
    }


def test_grpc_request_names_model_signature_version_and_input():
    request = GrpcClient("serving:8500", "pneumonia", 2).request(
        "predict_image_bytes", {"image_bytes": np.array([b"abc"], dtype=object)}
    )
    assert (
        request.model_spec.name,
        request.model_spec.signature_name,
        request.model_spec.version.value,
    ) == ("pneumonia", "predict_image_bytes", 2)
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == [b"abc"]


@pytest.mark.parametrize("images", [np.zeros((1, 32, 32, 1)), np.zeros((32, 32, 3))])
def test_wrong_channel_count_is_refused_before_sending(images):
    for client in (RestClient("http://127.0.0.1:1"), GrpcClient("127.0.0.1:1")):
        with pytest.raises(ValueError, match=re.escape(f"Received shape={images.shape}")):
            client.predict_arrays(images)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RestClient("localhost:8501"),
        lambda: GrpcClient("http://localhost:8500"),
        lambda: RestClient("http://s:8501", "../x"),
        lambda: GrpcClient("s:8500", timeout=0),
    ],
)
def test_bad_addresses_and_names_are_usage_errors(make):
    with pytest.raises(UsageError, match="Received"):
        make()


# --- against the fakes ----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--server", "--grpc"])
def test_predict_through_the_server_matches_keras(exported, rest_url, grpc_target, capsys, flag):
    address = rest_url if flag == "--server" else grpc_target
    images = str(exported["images"])
    served = predict_json(
        capsys, [images, flag, address, "--name", "pneumonia", "--batch-size", "2"]
    )
    local = predict_json(capsys, [images, "--model", str(exported["run"])])
    assert [r["file"] for r in served] == [r["file"] for r in local]
    assert [r["class"] for r in served] == [r["class"] for r in local]
    for s, k in zip(served, local, strict=True):
        assert s["probabilities"] == pytest.approx(k["probabilities"], abs=1e-5)
    assert list(served[0]["probabilities"]) == list(CLASS_NAMES)


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_both_signatures_and_the_ensemble_through_the_clients(
    exported, rest_url, grpc_target, kind
):
    images = sample_images(3)
    for name, folder in (
        ("pneumonia", exported["run"]),
        ("pneumonia-ensemble", exported["ensemble"]),
    ):
        client = (
            RestClient(rest_url, name, 1) if kind == "rest" else GrpcClient(grpc_target, name, 1)
        )
        expected = keras_probabilities(folder, images)
        by_array, by_bytes = client.predict_arrays(images), client.predict_bytes(png_bytes(images))
        for scores in (by_array, by_bytes):
            assert isinstance(scores, Scores) and scores.labels == CLASS_NAMES
            np.testing.assert_allclose(scores.probabilities, expected, atol=1e-5)
            assert scores.classes == [CLASS_NAMES[i] for i in expected.argmax(-1)]


@pytest.mark.parametrize("flag", ["--server", "--grpc"])
def test_missing_model_or_version_on_the_server_exits_2(
    exported, rest_url, grpc_target, capsys, flag
):
    address = rest_url if flag == "--server" else grpc_target
    images = str(exported["images"])
    for extra, message in (
        (["--version", "9"], "has no version 9"),
        (["--name", "absent"], "Servable not found"),
    ):
        assert run_cli(predict.main, [images, flag, address, *extra]) == 2
        err = capsys.readouterr().err
        assert "refused" in err and message in err and err.count("\n") == 1


def test_server_refusing_bytes_that_are_no_image(rest_url, grpc_target):
    with pytest.raises(UsageError, match=r"refused .*HTTP 400"):
        RestClient(rest_url).predict_bytes([b"not an image"])
    with pytest.raises(UsageError, match="refused the request .INVALID_ARGUMENT"):
        GrpcClient(grpc_target).predict_bytes([b"not an image"])


# --- servers that do not answer -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rest_server_that_never_answers_times_out(exported, capsys):
    with socket.socket() as silent:  # accepts connections into its backlog, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        argv = [str(exported["images"]), "--server", url, "--timeout", "0.5"]
        assert run_cli(predict.main, argv) == 2
    assert time.monotonic() - started < 10
    assert "did not answer within 0.5 s" in capsys.readouterr().err


def test_grpc_server_slower_than_the_deadline_times_out(exported):
    server, target = start_grpc(exported["base"], delay=2.0)
    try:
        with pytest.raises(UsageError, match="did not answer within 0.3 s"):
            GrpcClient(target, timeout=0.3).predict_bytes(png_bytes(sample_images(1)))
    finally:
        server.stop(grace=None)


def test_nothing_listening_is_a_clear_error(exported, capsys):
    port, images = free_port(), str(exported["images"])
    for argv in (
        [images, "--server", f"http://127.0.0.1:{port}", "--timeout", "2"],
        [images, "--grpc", f"127.0.0.1:{port}", "--timeout", "2"],
    ):
        assert run_cli(predict.main, argv) == 2
        err = capsys.readouterr().err
        assert "cannot reach TF Serving" in err or "did not answer" in err, err
