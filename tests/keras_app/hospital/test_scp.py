"""The node's Storage SCP on its own (no model, no PACS): who may associate, how many at
once, what reaches the spool, and DIMSE over TLS with a certificate made in the test."""

from __future__ import annotations

import io
import logging
import ssl

import pydicom
import pytest
from pynetdicom import AE

from keras_app.hospital.pacs import Caller
from keras_app.hospital.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, StorageScp
from keras_app.hospital.spool import Spool
from tests.keras_app.hospital import certs, xray_dicom
from tests.keras_app.hospital.orthanc import free_port

NODE = "KERASAPP"
IMAGE = "1.2.840.10008.5.1.4.1.1.7"  # the test instance: a Secondary Capture header


def instance(uid: str | None = None) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(xray_dicom.make_no_pixels(accession="SCP1")))
    if uid is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    return ds


@pytest.fixture
def listening(tmp_path):
    """Starts an SCP with the given settings; stops every one started."""
    started = []

    def start(allow=("ORTHANC",), **kwargs):
        spool = kwargs.pop("spool", None) or Spool(tmp_path / "spool")
        scp = StorageScp(
            spool,
            lambda: None,
            ae_title=NODE,
            host="127.0.0.1",
            port=free_port(),
            allow=[Caller.parse(a) for a in allow],
            **kwargs,
        ).start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def associate(scp, calling="ORTHANC", tls=None):
    ae = AE(ae_title=calling)
    ae.add_requested_context(IMAGE)
    ae.add_requested_context("1.2.840.10008.1.1")
    tls_args = (tls, "127.0.0.1") if tls is not None else None
    return ae.associate("127.0.0.1", scp.port, ae_title=NODE, tls_args=tls_args)


def rejection(assoc) -> tuple[int, int, int]:
    primitive = assoc.acceptor.primitive
    return (primitive.result, primitive.result_source, primitive.diagnostic)


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]


def test_an_unknown_ae_title_is_rejected_at_association(listening, caplog):
    scp = listening(allow=("ORTHANC",))
    assoc = associate(scp, calling="STRANGER")
    assert assoc.is_rejected and rejection(assoc) == (0x01, 0x01, 0x03)  # calling AE unknown
    [line] = refusals(caplog)
    assert line == (
        "refused association from STRANGER@127.0.0.1: calling AE title not allowed "
        "(allowed: ORTHANC)"
    )
    allowed = associate(scp, calling="ORTHANC")
    assert allowed.is_established
    allowed.release()


def test_a_known_ae_title_from_another_host_is_rejected(listening, caplog):
    scp = listening(allow=("ORTHANC@10.254.254.254",))
    assoc = associate(scp, calling="ORTHANC")
    assert assoc.is_rejected and rejection(assoc) == (0x01, 0x01, 0x03)
    assert "ORTHANC@127.0.0.1: calling AE title not allowed" in refusals(caplog)[0]


def test_associations_past_the_limit_are_rejected_as_local_limit_exceeded(listening, caplog):
    scp = listening(max_associations=1)
    first = associate(scp)
    assert first.is_established
    second = associate(scp)
    assert second.is_rejected and rejection(second) == (0x02, 0x03, 0x02)  # transient
    assert "1 associations open, the limit is 1 (--max-associations)" in refusals(caplog)[0]
    first.release()
    third = associate(scp)
    assert third.is_established
    third.release()


def test_a_path_traversal_uid_writes_nothing(listening, tmp_path, caplog):
    scp = listening()
    assoc = associate(scp)
    status = assoc.send_c_store(instance("../../x"))
    assoc.release()
    assert status.Status == CANNOT_UNDERSTAND  # an error: the sender does not retry it
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written == ["spool", "spool/done", "spool/failed", "spool/incoming", "spool/tmp"]
    assert refusals(caplog) == [
        "refused instance '../../x' from ORTHANC@127.0.0.1: not a DICOM UID"
    ]


def test_a_full_spool_refuses_as_out_of_resources(listening, tmp_path, caplog):
    spool = Spool(tmp_path / "spool", max_bytes=1)
    scp = listening(spool=spool)
    assoc = associate(scp)
    assert assoc.send_c_store(instance()).Status == 0x0000
    status = assoc.send_c_store(instance())
    assoc.release()
    assert status.Status == OUT_OF_RESOURCES and len(spool.pending()) == 1  # the PACS retries
    assert "spool full" in refusals(caplog)[0]


def test_dimse_over_tls_with_a_self_signed_certificate(listening, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    from keras_app.hospital.pacs import Tls

    cert, key = certs.self_signed(tmp_path / "tls")
    tls = Tls(cert, key, ca=cert)  # trusts its own certificate: callers must present it
    scp = listening(tls=tls.server_context())
    assoc = associate(scp, tls=tls.client_context())
    assert assoc.is_established
    assert assoc.send_c_store(instance()).Status == 0x0000
    assoc.release()
    assert associate(scp).is_established is False  # plain DIMSE to a TLS port
    stranger = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cert)
    assert associate(scp, tls=stranger).is_established is False  # no client certificate
