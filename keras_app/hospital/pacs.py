"""Where the DICOM node stores its answers: the PACS by C-STORE, retried with back-off."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from keras_app.core.errors import UsageError

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash


class PacsError(RuntimeError):
    """The PACS could not be reached or refused a result: retried with back-off."""


@dataclass(frozen=True)
class Pacs:
    """Where results are C-STOREd: `HOST:PORT:AET`."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Pacs:
        host, _, rest = text.rpartition(":")
        host, _, port = host.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--pacs must be HOST:PORT:AET. Received --pacs={text!r}")
        return cls(host, int(port), check_ae_title(rest, "--pacs"))


def check_ae_title(value: str, flag: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise UsageError(
            f"{flag}: an AE title is 1 to 16 printable characters, no backslash. Received {value!r}"
        )
    return value


class CStoreSender:
    """Stores result datasets in the PACS by C-STORE, one association per study."""

    def __init__(self, pacs: Pacs, ae_title: str, *, timeout: float = 30.0):
        self.pacs = pacs
        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout
        for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            self.ae.add_requested_context(
                sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )

    def __call__(self, datasets: Sequence[pydicom.Dataset]) -> None:
        """Raises PacsError when the PACS is unreachable or refuses any of them."""
        pacs = self.pacs
        assoc = self.ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title)
        if not assoc.is_established:
            raise PacsError(f"no association with {pacs.ae_title}@{pacs.host}:{pacs.port}")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warning
                    raise PacsError(
                        f"{pacs.ae_title} refused {ds.SOPInstanceUID}: status "
                        f"{'none' if code is None else hex(code)}"
                    )
        finally:
            assoc.release()


class Backoff:
    """Exponential back-off: first, 2*first, 4*first ... up to `most` seconds."""

    def __init__(self, first: float = 1.0, most: float = 60.0):
        if not 0 < first <= most:
            raise ValueError(f"need 0 < first <= most. Received first={first}, most={most}")
        self.first, self.most = first, most
        self.delay = first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self.delay = self.first
