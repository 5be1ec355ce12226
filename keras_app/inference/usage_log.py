"""The usage log: one JSON line per image a deployed model answered, with nothing about the patient.

`predict --usage-log PATH` and the DICOM node append to it; `python -m keras_app.monitor`
reads it. A line (keys in this order):

    {"time": "2026-11-23T10:15:02.123Z", "source": "dicom_node", "study": "3f9c...",
     "instance": "a41b...", "key_id": "5e0d1c2a", "model": "readme", "model_version": "1a2b3c4d",
     "operating_point_version": 2, "positive_class": "PNEUMONIA", "probability": 0.8123,
     "decision": "PNEUMONIA", "status": "analysed", "guard": "passed", "latency_ms": 412.5}

- study, instance: the Study and SOP Instance UIDs, each an HMAC-SHA256 under the
  installation's secret key (24 hex digits): the same UID gives the same value, so the
  monitor counts studies, but without the key no one can find which UID a value is by
  hashing candidate UIDs. A file without UIDs (a JPEG) has study null and the HMAC of its
  content's SHA-256 as its instance. key_id names the key (a digest of it, not the key),
  so a log that spans a change of key says so.
- probability: the calibrated P(positive_class); decision: the class called at the
  operating point, "refer" for an analysed image inside its refer band (a reader decides),
  null when the image was not analysed.
- status: "analysed", "not_analysed" (the image guard refused it: no decision may be
  shown), or "failed" (it could not be read or answered). guard: "passed", "refused", or
  null where the model carries no image guard.
- latency_ms: the time to answer the image (a batch's time shared among its images).

No name, patient ID, birth date, accession number, file name or path is ever written:
`record` takes only the fields above, and the UIDs are keyed hashes.

The key: `KERAS_APP_LOG_KEY` (64 hex digits) if set, else the file `KERAS_APP_LOG_KEY_FILE`,
else `~/.config/keras_app/usage_log.key`, created at first use with 32 random bytes and
mode 0600. Keep it on the installation and out of copies of the log; the monitor does not
need it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from keras_app.core.errors import UsageError
from keras_app.decision.operating_point import REFER

KEY_ENV = "KERAS_APP_LOG_KEY"
KEY_FILE_ENV = "KERAS_APP_LOG_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/keras_app/usage_log.key")
HASH_CHARS = 24  # 96 bits: no two UIDs of a hospital's lifetime collide
STATUSES = ("analysed", "not_analysed", "failed")
FIELDS = (
    "time",
    "source",
    "study",
    "instance",
    "key_id",
    "model",
    "model_version",
    "operating_point_version",
    "positive_class",
    "probability",
    "decision",
    "status",
    "guard",
    "latency_ms",
)


def installation_key() -> bytes:
    """The secret the UIDs are hashed under (see the module docstring for where it lives)."""
    value = os.environ.get(KEY_ENV)
    if value:
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = b""
        if len(key) < 16:
            raise UsageError(f"{KEY_ENV} must be at least 32 hex digits (a 128-bit secret)")
        return key
    path = Path(os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE).expanduser()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) < 16:
        raise UsageError(f"the usage log key {path} holds {len(key)} bytes; expected 32")
    return key


class UsageLog:
    """Appends one line per answered image to a JSON-lines file.

    Args:
        path: the log file (created with its folder; appended to, never rewritten).
        key: the secret UIDs are hashed under; None: `installation_key()`.
        source: who answers ("predict", "dicom_node"), written on every line.

    Example (the DICOM node, once per image):
        >>> log = UsageLog("/var/log/keras_app/usage.jsonl", source="dicom_node")
        >>> log.record(study_uid=ds.StudyInstanceUID, instance_uid=ds.SOPInstanceUID,
        ...            model="readme", model_version="3", operating_point_version=2,
        ...            positive_class="PNEUMONIA", probability=0.81, decision="PNEUMONIA",
        ...            guard=True, latency_ms=412.5)
    """

    def __init__(self, path: str | os.PathLike, *, key: bytes | None = None, source: str = ""):
        self.path = Path(path).expanduser()
        self.key = installation_key() if key is None else bytes(key)
        self.key_id = hashlib.sha256(b"keras_app usage log key id\0" + self.key).hexdigest()[:8]
        self.source = source
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def pseudonym(self, value: str | bytes | None) -> str | None:
        """The keyed hash a UID is written as (None stays None)."""
        if value is None or value == "":
            return None
        data = value.encode() if isinstance(value, str) else bytes(value)
        return hmac.new(self.key, data.strip(b"\0 "), hashlib.sha256).hexdigest()[:HASH_CHARS]

    def record(
        self,
        *,
        instance_uid: str | bytes,
        study_uid: str | None = None,
        model: str,
        model_version: str | None = None,
        operating_point_version: int | None = None,
        positive_class: str | None = None,
        probability: float | None = None,
        decision: str | None = None,
        guard: bool | None = None,
        refused: bool = False,
        failed: bool = False,
        latency_ms: float | None = None,
        time: datetime | None = None,
    ) -> dict:
        """Appends one image's line and returns it.

        Args:
            instance_uid: the SOP Instance UID (or, for a file without one, bytes that
                identify it: `content_id(file bytes)`); hashed before it is written.
            study_uid: the Study Instance UID; hashed.
            guard: the image guard's verdict (True: passed); None without a guard. A
                refused image is written "not_analysed" with no decision.
            refused: not analysed for another reason than the guard (the DICOM node's
                header or integrity guard).
            failed: the image could not be read or answered.
            time: when it was answered (default now), written in UTC.
        """
        not_analysed = guard is False or refused
        status = "failed" if failed else "not_analysed" if not_analysed else "analysed"
        line = {
            "time": _utc(time),
            "source": self.source,
            "study": self.pseudonym(study_uid),
            "instance": self.pseudonym(instance_uid),
            "key_id": self.key_id,
            "model": model,
            "model_version": None if model_version is None else str(model_version),
            "operating_point_version": (
                None if operating_point_version is None else int(operating_point_version)
            ),
            "positive_class": positive_class,
            "probability": None if probability is None else round(float(probability), 6),
            "decision": decision if status == "analysed" else None,
            "status": status,
            "guard": None if guard is None else "passed" if guard else "refused",
            "latency_ms": None if latency_ms is None else round(float(latency_ms), 1),
        }
        text = json.dumps(line, separators=(", ", ": ")) + "\n"
        # One write() of one line, O_APPEND: concurrent writers' lines never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return line


def model_version(predictor) -> str:
    """An export's version number, the served version, or a digest of the weights file: how
    the usage log and the DICOM node's SR name the model's version."""
    from keras_app.artifacts.runs import RunFolder

    if predictor.kind == "saved_model":
        return Path(predictor.path).name
    if predictor.kind == "serving":
        version = getattr(predictor.client, "version", None)
        return str(version) if version is not None else "latest"
    path = Path(predictor.path)
    weights = path if path.is_file() else RunFolder(path).best
    if not weights.is_file():
        return "unknown"
    return "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()[:12]


def content_id(data: bytes) -> bytes:
    """What stands for the instance UID of a file that has none: its content's SHA-256."""
    return hashlib.sha256(data).digest()


def file_uids(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(study UID, SOP instance UID) of a DICOM file; (None, None) for any other file."""
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SOPInstanceUID"]
        )
    except Exception:  # not DICOM: JPEG, PNG, BMP
        return None, None
    return ds.get("StudyInstanceUID"), ds.get("SOPInstanceUID")


def log_predictions(
    log: UsageLog, predictor, files: Sequence[Path], contents: Sequence[bytes], scores, seconds
) -> None:
    """One line per predicted file (`predict --usage-log`): the batch's time shared out."""
    from keras_app.decision.metrics import positive_index

    labels = list(scores.labels or predictor.class_names)
    pos = positive_index(labels, scores.positive_class)
    guard, refer = scores.in_distribution, scores.refer or [False] * len(files)
    each = seconds * 1000 / max(1, len(files))
    version = model_version(predictor)
    for i, (path, data) in enumerate(zip(files, contents, strict=True)):
        study, instance = file_uids(path)
        log.record(
            study_uid=study,
            instance_uid=instance or content_id(data),
            model=predictor.name,
            model_version=version,
            operating_point_version=scores.operating_point_version,
            positive_class=labels[pos] if pos is not None else None,
            probability=float(scores.probabilities[i][pos]) if pos is not None else None,
            decision=REFER if refer[i] else scores.decisions[i] if scores.decisions else None,
            guard=None if guard is None else bool(guard[i]),
            latency_ms=each,
        )


def read_usage_log(path: str | os.PathLike) -> Iterator[dict]:
    """Every line of a usage log, as written.

    A last line without its newline (a writer stopped mid-line) is left out; any other
    line that is not a JSON object with the log's fields is an error.

    Raises:
        UsageError: no such file, or a malformed line (named by its number).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no usage log at {path}")
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    complete = lines[:-1]  # what follows the last newline is unfinished (or empty)
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(record, dict) or not {"time", "status"} <= set(record):
            raise UsageError(f"{path}:{number}: not a usage log line (needs time and status)")
        if record["status"] not in STATUSES:
            raise UsageError(f"{path}:{number}: unknown status {record['status']!r}")
        yield record


def _utc(time: datetime | None) -> str:
    time = time or datetime.now(timezone.utc)
    if time.tzinfo is None:
        time = time.replace(tzinfo=timezone.utc)
    return time.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
