"""The DICOM node over HTTP: credentials, DICOMweb (one study, or STOW-RS for answers).

One `requests.Session` carries what every HTTP request of the node needs: HTTPS with
the hospital's CA (`ca`), and basic (`user` + password) or bearer (`token`) auth. The
secrets are read from files, so they show neither in the process list nor in a unit
file (systemd's LoadCredential= hands such files to a service).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests

from keras_app.core.errors import UsageError
from keras_app.hospital.answers import Analyser, Answer, log_answers
from keras_app.hospital.pacs import PacsError
from keras_app.hospital.reading import DEFAULT_POLICY, NotAnalysed, Skipped, read_image

log = logging.getLogger("keras_app.dicom_node")


@dataclass(frozen=True)
class HttpAuth:
    """How the node authenticates to a PACS's HTTP API.

    Attributes:
        user: basic auth user name (its password in `password_file`).
        password_file: a file holding the password (one line).
        token_file: a file holding a bearer token (one line).
        ca: a CA bundle (PEM) to verify the server's certificate with; None: the
            system's.
    """

    user: str | None = None
    password_file: Path | None = None
    token_file: Path | None = None
    ca: Path | None = None

    def __post_init__(self):
        if (self.user is None) != (self.password_file is None):
            raise UsageError("--http-user and --http-password-file go together")
        if self.user is not None and self.token_file is not None:
            raise UsageError("give basic auth (--http-user) or a bearer token, not both")


def http_session(auth: HttpAuth | None = None):
    """A `requests.Session` with `auth`'s credentials and CA.

    Raises:
        UsageError: a secret or CA file cannot be read.
    """
    auth = auth or HttpAuth()
    session = _Session()
    if auth.ca is not None:
        if not Path(auth.ca).is_file():
            raise UsageError(f"--http-ca {auth.ca}: no such file")
        session.verify = str(auth.ca)
    if auth.user is not None:
        session.auth = (auth.user, _secret(auth.password_file, "--http-password-file"))
    if auth.token_file is not None:
        token = _secret(auth.token_file, "--http-token-file")
        session.headers["Authorization"] = f"Bearer {token}"
    return session


class _Session(requests.Session):
    """A session whose own CA wins: requests otherwise prefers REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE from the environment to `session.verify` (requests issue 3829), and
    the hospital's CA given with --http-ca would be silently ignored."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


def _secret(path: Path, flag: str) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot read it ({err.strerror})") from None
    if not text:
        raise UsageError(f"{flag} {path} is empty")
    return text


@contextlib.contextmanager
def refused_as_usage_error(url: str):
    """An HTTP 401/403 or an untrusted certificate is a setting to fix: one line, exit 2."""
    try:
        yield
    except requests.exceptions.SSLError as err:
        raise UsageError(
            f"{url}: its certificate is not trusted ({_reason(err)}): give --http-ca CA.pem"
        ) from None
    except requests.HTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status not in (401, 403):
            raise
        raise UsageError(
            f"{url} answered {status} {err.response.reason}: check --http-user and "
            "--http-password-file, or --http-token-file"
        ) from None


def check_http(session, url: str, probe: str) -> None:
    """Asks `url + probe` once at start, so a wrong password or CA stops the command at
    once, before the model loads; the server being down does not (the node retries).

    Raises:
        UsageError: 401/403, or a certificate not trusted.
    """
    with refused_as_usage_error(url):
        try:
            session.get(f"{url.rstrip('/')}{probe}", timeout=30).raise_for_status()
        except requests.ConnectionError as err:
            if isinstance(err, requests.exceptions.SSLError):
                raise
            log.warning("%s cannot be reached yet (%s): the node keeps trying", url, _reason(err))


def _reason(err: BaseException) -> str:
    text = str(err)
    return text.rsplit(":", 1)[-1].strip(" )'\"")[:120] or type(err).__name__


def dicomweb_client(url: str, session):
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url, session=session)


class StowSender:
    """Stores answers by STOW-RS (the `store` of a node whose PACS speaks DICOMweb)."""

    def __init__(self, client):
        self.client = client

    def __call__(self, datasets: Sequence[pydicom.Dataset]) -> None:
        """Raises PacsError when the PACS is unreachable or refuses any of them."""
        if not datasets:
            return
        try:
            answer = self.client.store_instances(list(datasets))
        except requests.RequestException as err:
            raise PacsError(f"STOW-RS to {self.client.base_url}: {_reason(err)}") from None
        failed = answer.get("FailedSOPSequence") or []
        if failed:
            item = failed[0]
            raise PacsError(
                f"{self.client.base_url} refused {len(failed)} of {len(datasets)} by STOW-RS "
                f"({item.get('ReferencedSOPInstanceUID')}: failure reason "
                f"{item.get('FailureReason')})"
            )
        stored = {str(i.ReferencedSOPInstanceUID) for i in answer.get("ReferencedSOPSequence", [])}
        missing = [
            str(ds.SOPInstanceUID) for ds in datasets if str(ds.SOPInstanceUID) not in stored
        ]
        if missing:  # a 200 that does not name what was sent is not a store
            raise PacsError(
                f"{self.client.base_url} did not confirm {len(missing)} of {len(datasets)} "
                f"stored by STOW-RS (first: {missing[0]})"
            )


def answer_dicomweb_study(
    analyser: Analyser, client, study: str, *, policy=DEFAULT_POLICY
) -> list[Answer]:
    """Reads one study by QIDO-RS/WADO-RS, stores its answers by STOW-RS.

    Raises:
        UsageError: the study has no instances there, or none is an image.
    """
    start = time.perf_counter()
    readings = []
    with refused_as_usage_error(client.base_url):
        instances = client.search_for_instances(study_instance_uid=study)
    for found in instances:
        instance = pydicom.Dataset.from_json(found)
        ds = client.retrieve_instance(study, instance.SeriesInstanceUID, instance.SOPInstanceUID)
        try:
            readings.append(read_image(_encode(ds), policy))
        except NotAnalysed as refused:
            readings.append(refused)
        except Skipped as why:
            (log.debug if why.quiet else log.warning)(
                "skipped %s: %s", instance.SOPInstanceUID, why
            )
    if not readings:
        raise UsageError(f"study {study} at {client.base_url} holds no image")
    answers = analyser.answer(readings)
    for answer in answers:
        if answer.error:
            log.warning("cannot answer %s: %s", answer.header.get("SOPInstanceUID"), answer.error)
    explained = [
        (r, a) for r, a in zip(readings, answers, strict=True) if analyser.wants_overlay(a)
    ]
    overlays = [ds for ds in analyser.draw_overlays(explained) if ds is not None]
    StowSender(client)([ds for answer in answers for ds in answer.datasets] + overlays)
    log_answers(answers, (time.perf_counter() - start) * 1000)
    return answers


def _encode(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()
