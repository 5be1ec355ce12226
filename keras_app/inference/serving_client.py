"""Clients for a TF Serving model server: REST (port 8501) and gRPC (port 8500).

Both send a batch of encoded images (JPEG, PNG or BMP bytes) to the
`predict_image_bytes` signature that `keras_app.export` writes, or float pixels
to `serving_default`, and return the same `Scores`.

The signature names and tensor names below are the contract between
`keras_app.export` and these clients.

Example:
    >>> client = RestClient("http://localhost:8501", "pneumonia")
    >>> scores = client.predict_bytes([open("xray.jpeg", "rb").read()])
    >>> scores.classes[0], scores.probabilities[0]
    ('PNEUMONIA', array([0.03, 0.97], dtype=float32))
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keras_app.core.errors import UsageError
from keras_app.decision.operating_point import not_analysed_reason, refer_reason

SERVING_DEFAULT = "serving_default"  # float images [batch, h, w, 3] in 0-255
PREDICT_IMAGE_BYTES = "predict_image_bytes"  # encoded image strings [batch]
IMAGES = "images"  # serving_default's input
# The `_bytes` suffix marks a binary string tensor for TF Serving's JSON mapping.
IMAGE_BYTES = "image_bytes"  # predict_image_bytes' input
PROBABILITIES = "probabilities"  # float32 [batch, classes]
CLASSES = "classes"  # string [batch]: the most probable class's label
LABELS = "labels"  # string [batch, classes]: every label, in probability order
DECISION = "decision"  # string [batch]: the class at the model's operating point
THRESHOLD = "threshold"  # float32 [batch]: that operating point's threshold (-1: argmax)
POSITIVE_CLASS = "positive_class"  # string [batch]: the class the threshold is for ("": none)
OPERATING_POINT_VERSION = "operating_point_version"  # int32 [batch]: which version decided
IN_DISTRIBUTION = "in_distribution"  # bool [batch]: the image guard let it through
OOD_SCORE = "ood_score"  # float32 [batch]: the guard's score (higher: less like training)
OOD_LIMIT = "ood_limit"  # float32 [batch]: the score above which an image is not analysed
# Only where the operating point has a refer band:
REFER = "refer"  # bool [batch]: analysed, and inside the refer band: a reader decides
REFER_LOW = "refer_low"  # float32 [batch]: the band's low edge (inside: low <= p < high)
REFER_HIGH = "refer_high"  # float32 [batch]: the band's high edge

# Where `docker run -v $PWD/saved_models:/models tensorflow/serving` sees the base folder.
DEFAULT_SERVING_ROOT = "/models"
DEFAULT_TIMEOUT = 30.0  # seconds; a CPU server's first request also warms the model up


class ServingError(UsageError):
    """The model server did not answer, or refused the request: one line, exit code 2."""


@dataclass(frozen=True, eq=False)
class Scores:
    """What one predict call returns, whatever served it.

    Attributes:
        probabilities: float32 `[n, classes]`.
        classes: the most probable label of each row.
        labels: the class names, in the order of `probabilities`' columns.
        decisions: the class of each row at the model's operating point (its
            validation-chosen threshold); None where the server sent none.
        threshold: the operating point's threshold (None: the most probable class).
        positive_class: the class the threshold applies to.
        operating_point_version: the version of the operating point that decided.
        in_distribution: per row, whether the image guard let it through (a False row's
            decision must not be shown: the image is "not analysed"); None where the
            model carries no image guard.
        ood_score: per row, the guard's score (higher: further from the training images).
        ood_limit: the guard's limit (part of the operating point).
        refer: per row, whether the image is referred to a reader (analysed, inside the
            refer band: its decision must not be shown as the model's); None without a band.
        refer_band: the band's (low, high).
    """

    probabilities: np.ndarray
    classes: list[str]
    labels: tuple[str, ...]
    decisions: list[str] | None = None
    threshold: float | None = None
    positive_class: str | None = None
    operating_point_version: int | None = None
    in_distribution: list[bool] | None = None
    ood_score: np.ndarray | None = None
    ood_limit: float | None = None
    refer: list[bool] | None = None
    refer_band: tuple[float, float] | None = None

    @classmethod
    def from_outputs(cls, outputs: dict) -> Scores:
        """From a signature's outputs (numpy arrays, strings as bytes or str)."""
        probabilities = np.asarray(outputs[PROBABILITIES], dtype=np.float32)
        classes = [_text(c) for c in np.asarray(outputs[CLASSES]).reshape(-1)]
        labels = np.asarray(outputs[LABELS])
        labels = tuple(_text(x) for x in labels[0]) if len(labels) else ()

        def first(name):  # the same on every row: the model's, not the image's
            values = np.asarray(outputs[name]).reshape(-1) if name in outputs else ()
            return values[0] if len(values) else None

        decisions = (
            [_text(c) for c in np.asarray(outputs[DECISION]).reshape(-1)]
            if DECISION in outputs
            else None
        )
        threshold = first(THRESHOLD)
        positive = first(POSITIVE_CLASS)
        version = first(OPERATING_POINT_VERSION)
        guarded = IN_DISTRIBUTION in outputs and OOD_SCORE in outputs
        return cls(
            probabilities.reshape(len(classes), -1),
            classes,
            labels,
            decisions,
            threshold=float(threshold) if threshold is not None and threshold >= 0 else None,
            positive_class=(_text(positive) or None) if positive is not None else None,
            operating_point_version=int(version) if version is not None else None,
            in_distribution=[bool(v) for v in np.asarray(outputs[IN_DISTRIBUTION]).reshape(-1)]
            if guarded
            else None,
            ood_score=np.asarray(outputs[OOD_SCORE], np.float32).reshape(-1) if guarded else None,
            ood_limit=float(limit)
            if (limit := first(OOD_LIMIT)) is not None and limit >= 0
            else None,
            refer=[bool(v) for v in np.asarray(outputs[REFER]).reshape(-1)]
            if REFER in outputs
            else None,
            refer_band=(float(first(REFER_LOW)), float(first(REFER_HIGH)))
            if REFER in outputs and first(REFER_LOW) is not None
            else None,
        )

    def not_analysed(self, i: int) -> str | None:
        """Why row `i` is not analysed (the image guard stopped it), or None if it is."""
        if self.in_distribution is None or self.in_distribution[i]:
            return None
        return not_analysed_reason(float(self.ood_score[i]), self.ood_limit)

    def referred(self, i: int) -> str | None:
        """Why row `i` is referred to a reader (inside the refer band), or None if it is not."""
        if self.refer is None or not self.refer[i] or self.not_analysed(i):
            return None
        names = list(self.labels)
        pos = names.index(self.positive_class) if self.positive_class in names else -1
        return refer_reason(
            float(self.probabilities[i][pos]), *self.refer_band, self.positive_class
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Scores]) -> Scores:
        if not parts:
            raise ValueError("no scores to concatenate")
        return dataclasses.replace(
            parts[0],
            probabilities=np.concatenate([p.probabilities for p in parts]),
            classes=[c for p in parts for c in p.classes],
            decisions=None
            if any(p.decisions is None for p in parts)
            else [d for p in parts for d in p.decisions],
            in_distribution=None
            if any(p.in_distribution is None for p in parts)
            else [d for p in parts for d in p.in_distribution],
            ood_score=None
            if any(p.ood_score is None for p in parts)
            else np.concatenate([p.ood_score for p in parts]),
            refer=None
            if any(p.refer is None for p in parts)
            else [r for p in parts for r in p.refer],
        )


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def check_image_array(images: np.ndarray) -> np.ndarray:
    """Float32 images `[n, h, w, 3]`, or a ValueError saying what was received."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"expected RGB images of shape [batch, height, width, 3]. Received shape={images.shape}"
        )
    return images.astype(np.float32, copy=False)


class RestClient:
    """TF Serving's REST predict API: `POST /v1/models/NAME[/versions/N]:predict`.

    Args:
        url: the server, e.g. "http://localhost:8501".
        model: the model name (a folder under the server's base, a name in models.config).
        version: a version number, or None for the one the server serves by default.
        timeout: seconds to wait for a connection and for each answer.
    """

    def __init__(
        self,
        url: str,
        model: str = "pneumonia",
        version: int | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        if not re.match(r"^https?://[^/\s]+", url or ""):
            raise UsageError(
                f"the server must be an http(s) URL such as http://localhost:8501. Received {url!r}"
            )
        _check_common(model, version, timeout)
        self.url = url.rstrip("/")
        self.model, self.version, self.timeout = model, version, timeout

    @property
    def predict_url(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model}{version}:predict"

    @staticmethod
    def bytes_request(images: Sequence[bytes]) -> dict:
        """The JSON body for `predict_image_bytes`: one `{"b64": ...}` instance per image.

        The signature has a single named input, so each instance is that input's
        value (TF Serving's row format), and binary strings travel as `{"b64": ...}`.
        """
        instances = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
        return {"signature_name": PREDICT_IMAGE_BYTES, "instances": instances}

    @staticmethod
    def array_request(images: np.ndarray) -> dict:
        """The JSON body for `serving_default`: one nested list of pixels per image."""
        return {"signature_name": SERVING_DEFAULT, "instances": check_image_array(images).tolist()}

    def predict_bytes(self, images: Sequence[bytes]) -> Scores:
        """Classifies encoded images (JPEG, PNG, BMP bytes)."""
        return self._post(self.bytes_request(images))

    def predict_arrays(self, images: np.ndarray) -> Scores:
        """Classifies float images `[n, h, w, 3]` in 0-255, already at the model's size."""
        return self._post(self.array_request(images))

    def _post(self, body: dict) -> Scores:
        import requests

        try:
            answer = requests.post(self.predict_url, json=body, timeout=self.timeout)
        except requests.Timeout:
            raise ServingError(
                f"TF Serving at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except requests.ConnectionError as err:
            raise ServingError(
                f"cannot reach TF Serving at {self.url} (is it running?): {_first_line(err)}"
            ) from None
        try:
            payload = answer.json()
        except ValueError:
            payload = {"error": answer.text[:200]}
        if answer.status_code != 200 or "error" in payload:
            raise ServingError(
                f"TF Serving at {self.url} refused {self.predict_url} "
                f"(HTTP {answer.status_code}): {payload.get('error', '')}".rstrip(": ")
            )
        return parse_rest_predictions(payload)


def parse_rest_predictions(payload: dict) -> Scores:
    """A row-format predict answer (`{"predictions": [{name: value, ...}, ...]}`) as Scores."""
    rows = payload.get("predictions")
    if not isinstance(rows, list) or (rows and not isinstance(rows[0], dict)):
        raise ServingError(
            "TF Serving's answer has no named outputs; was the model exported by keras_app.export? "
            f"Received keys={sorted(payload)}"
        )
    missing = {PROBABILITIES, CLASSES, LABELS} - set(rows[0]) if rows else set()
    if missing:
        raise ServingError(f"TF Serving's answer lacks the outputs {sorted(missing)}")
    columns = {name: [row[name] for row in rows] for name in (rows[0] if rows else ())}
    columns.setdefault(PROBABILITIES, [])
    columns.setdefault(CLASSES, [])
    columns.setdefault(LABELS, [])
    return Scores.from_outputs(columns)


class GrpcClient:
    """TF Serving's gRPC PredictionService (tensorflow-serving-api's stub).

    Args:
        target: "HOST:PORT" of the server's gRPC port (8500 by default).
        model, version, timeout: as for `RestClient`.
    """

    def __init__(
        self,
        target: str,
        model: str = "pneumonia",
        version: int | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        if not re.match(r"^[^\s/:]+:\d+$", target or "") and not re.match(
            r"^\[[0-9a-fA-F:]+\]:\d+$", target or ""
        ):
            raise UsageError(f"--grpc takes HOST:PORT such as localhost:8500. Received {target!r}")
        _check_common(model, version, timeout)
        self.target, self.model, self.version, self.timeout = target, model, version, timeout
        self._channel = None

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _stub(self):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if self._channel is None:
            # No message size cap: a batch of full-size X-rays can pass gRPC's 4 MB default.
            options = [
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
            ]
            self._channel = grpc.insecure_channel(self.target, options=options)
        return prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def request(self, signature: str, inputs: dict):
        """A PredictRequest for `signature` with `inputs` (name -> numpy array)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return request

    def predict_bytes(self, images: Sequence[bytes]) -> Scores:
        """Classifies encoded images (JPEG, PNG, BMP bytes)."""
        values = np.array(list(images), dtype=object)
        return self._predict(self.request(PREDICT_IMAGE_BYTES, {IMAGE_BYTES: values}))

    def predict_arrays(self, images: np.ndarray) -> Scores:
        """Classifies float images `[n, h, w, 3]` in 0-255, already at the model's size."""
        return self._predict(self.request(SERVING_DEFAULT, {IMAGES: check_image_array(images)}))

    def _predict(self, request) -> Scores:
        import grpc
        import tensorflow as tf

        try:
            response = self._stub().Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise self._error(err, grpc) from None
        outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        missing = {PROBABILITIES, CLASSES, LABELS} - set(outputs)
        if missing:
            raise ServingError(f"TF Serving's answer lacks the outputs {sorted(missing)}")
        return Scores.from_outputs(outputs)

    def _error(self, err, grpc) -> ServingError:
        code = err.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServingError(
                f"TF Serving at {self.target} did not answer within {self.timeout:g} s"
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            return ServingError(
                f"cannot reach TF Serving at {self.target} (is it running?): "
                f"{_first_line(err.details())}"
            )
        return ServingError(
            f"TF Serving at {self.target} refused the request ({code.name}): "
            f"{_first_line(err.details())}"
        )


def _check_common(model: str, version: int | None, timeout: float) -> None:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", model or ""):
        raise UsageError(
            f"the model name must be a folder name such as pneumonia. Received {model!r}"
        )
    if version is not None and version < 0:
        raise UsageError(f"the version must be >= 0. Received version={version}")
    if not timeout > 0:
        raise UsageError(f"the timeout must be > 0 seconds. Received timeout={timeout}")


def _first_line(value) -> str:
    return str(value).strip().splitlines()[0][:300] if str(value).strip() else ""
