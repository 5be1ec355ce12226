"""The DICOM node's peers: the PACS it stores answers in (C-STORE, optionally over TLS,
retried with back-off), and the callers allowed to send it images."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Caller:
    """One allowed caller: an AE title, from any host or from the addresses of `host`.

    `Caller.parse("ORTHANC@10.0.0.5")`; `Caller.parse("MODALITY1")` (any host).
    """

    ae_title: str
    host: str | None = None
    addresses: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str, flag: str = "--allow") -> Caller:
        ae_title, _, host = text.partition("@")
        check_ae_title(ae_title, flag)
        if not host:
            return cls(ae_title)
        try:
            addresses = frozenset(_addresses(host))
        except OSError as err:
            raise UsageError(f"{flag} {text}: cannot resolve {host!r} ({err})") from None
        return cls(ae_title, host, addresses)

    def allows(self, ae_title: str, address: str) -> bool:
        return ae_title.strip() == self.ae_title.strip() and (
            self.host is None or _normal(address) in self.addresses
        )

    def __str__(self) -> str:
        return self.ae_title + (f"@{self.host}" if self.host else "")


def _addresses(host: str) -> set[str]:
    """A host's addresses, resolved once at start (a caller is matched by its address)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {_normal(info[4][0]) for info in socket.getaddrinfo(host, None)}
    return {_normal(host)}


def _normal(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.0.0.5 is 10.0.0.5
    return str(mapped or ip)


@dataclass(frozen=True)
class Tls:
    """The node's TLS settings for DIMSE (PS3.15 B.1: TLS 1.2 or later).

    Attributes:
        cert, key: the node's certificate and private key (PEM): the listener
            presents them, and so does the node to a PACS that asks for a client's.
        ca: certificates the node trusts (PEM): a caller must present one signed by
            them, and the PACS's certificate is checked against them.
    """

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.ca is not None:
            context.load_verify_locations(cafile=self.ca)
            context.verify_mode = ssl.CERT_REQUIRED  # callers prove who they are
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


class CStoreSender:
    """Stores result datasets in the PACS by C-STORE, one association per call.

    Args:
        pacs: where to.
        ae_title: the node's calling AE title.
        timeout: seconds for each network step.
        tls: a client TLS context (`Tls.client_context()`); None: plain DIMSE.
    """

    def __init__(
        self,
        pacs: Pacs,
        ae_title: str,
        *,
        timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ):
        self.pacs = pacs
        self.tls = tls
        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout
        for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            self.ae.add_requested_context(
                sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )

    def __call__(self, datasets: Sequence[pydicom.Dataset]) -> None:
        """Raises PacsError when the PACS is unreachable or refuses any of them."""
        pacs = self.pacs
        tls_args = (self.tls, pacs.host) if self.tls is not None else None
        assoc = self.ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            secure = " over TLS" if self.tls is not None else ""
            raise PacsError(f"no association with {pacs.ae_title}@{pacs.host}:{pacs.port}{secure}")
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
