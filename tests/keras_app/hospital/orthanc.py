"""A real Orthanc PACS on loopback, for the DICOM node's tests and benchmark.

Orthanc runs from a generated configuration in a temporary folder (its own
ports, storage and AE title, the node as a known modality, the DICOMweb plugin
on) and is driven through its REST API.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import requests

BINARY = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PACKAGES = ("orthanc", "orthanc-dicomweb")  # Debian packages (make test installs them as root)


def missing_reason() -> str | None:
    """Why Orthanc cannot run here, or None."""
    if shutil.which(BINARY) is None:
        return (
            f"the {BINARY} binary is not installed: apt-get install {' '.join(PACKAGES)} "
            "(make test does it when run as root)"
        )
    if not DICOMWEB_PLUGIN.is_file():
        return f"{DICOMWEB_PLUGIN} is missing: apt-get install orthanc-dicomweb"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process: `start()`, the REST helpers, `stop()`.

    Args:
        root: a folder for its configuration, storage and log.
        modalities: {name: (AE title, host, port)} Orthanc may send to (or Orthanc's own
            dict form, {"AET": ..., "Host": ..., "Port": ..., "UseDicomTls": true}).
        ae_title: Orthanc's own AE title.
        dicom_tls: (certificate, key) PEM files: Orthanc's DIMSE is TLS only, and it
            trusts that certificate (the tests use one self-signed for every party).
    """

    def __init__(
        self,
        root: Path,
        modalities: dict,
        *,
        ae_title: str = "ORTHANC",
        dicom_tls: tuple[Path, Path] | None = None,
    ):
        self.root = Path(root)
        self.ae_title = ae_title
        self.modalities = modalities
        self.dicom_tls = dicom_tls
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.process: subprocess.Popen | None = None

    def config(self) -> dict:
        storage = str(self.root / "storage")
        return {
            "Name": "keras-app-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {
                k: v if isinstance(v, dict) else list(v) for k, v in self.modalities.items()
            },
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            # Close its outgoing associations at once: the node sees a study end sooner.
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 30,
            "StableAge": 1,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            **self._tls_config(),
        }

    def _tls_config(self) -> dict:
        if self.dicom_tls is None:
            return {}
        cert, key = (str(p) for p in self.dicom_tls)
        return {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": cert,
            "DicomTlsPrivateKey": key,
            "DicomTlsTrustedCertificates": cert,
            "DicomTlsRemoteCertificateRequired": True,
        }

    def start(self, timeout: float = 60.0) -> Orthanc:
        """Starts Orthanc and waits until its REST API answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        self.log = self.root / "orthanc.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [BINARY, str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start:\n{self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"Orthanc did not answer in {timeout} s:\n{self.log.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    # --- REST ---

    def upload(self, data: bytes) -> dict:
        """Stores one DICOM file; returns Orthanc's answer (ID, ParentStudy, ...)."""
        answer = requests.post(f"{self.url}/instances", data=data, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def send(self, modality: str, resources: list[str], *, synchronous: bool = True) -> dict:
        """Has Orthanc C-STORE studies or instances (Orthanc IDs) to a modality."""
        answer = requests.post(
            f"{self.url}/modalities/{modality}/store",
            json={"Resources": resources, "Synchronous": synchronous},
            timeout=300,
        )
        answer.raise_for_status()
        return answer.json()

    def study_id(self, study_uid: str) -> str | None:
        answer = requests.post(f"{self.url}/tools/lookup", data=study_uid, timeout=30).json()
        ids = [a["ID"] for a in answer if a["Type"] == "Study"]
        return ids[0] if ids else None

    def instances(self, study_uid: str) -> list[pydicom.Dataset]:
        """Every instance of a study, read back as DICOM files."""
        study = self.study_id(study_uid)
        if study is None:
            return []
        listing = requests.get(f"{self.url}/studies/{study}/instances", timeout=30).json()
        return [self.read(i["ID"]) for i in listing]

    def read(self, instance_id: str) -> pydicom.Dataset:
        data = requests.get(f"{self.url}/instances/{instance_id}/file", timeout=30).content
        return pydicom.dcmread(io.BytesIO(data))

    def count_instances(self, study_uid: str) -> int:
        study = self.study_id(study_uid)
        if study is None:
            return 0
        return len(requests.get(f"{self.url}/studies/{study}/instances", timeout=30).json())
