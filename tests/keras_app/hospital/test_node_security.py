"""The node's secured paths against a real Orthanc, with a certificate made in the test:
DIMSE over TLS both ways, and DICOMweb and the pull intake over HTTPS with basic or
bearer auth (through a TLS-terminating proxy in front of Orthanc, as in hospitals)."""

from __future__ import annotations

import logging
import time

import pytest

from keras_app import dicom_node as dicom_node_cli
from keras_app.core.cli import run_cli
from keras_app.hospital.answers import Analyser
from keras_app.hospital.node import DicomNode
from keras_app.hospital.pacs import Backoff, Caller, CStoreSender, Pacs, Tls
from keras_app.hospital.results import read_sr
from keras_app.hospital.spool import Spool
from keras_app.hospital.web import HttpAuth, StowSender, dicomweb_client, http_session
from tests.keras_app.hospital import certs, https_proxy, xray_dicom
from tests.keras_app.hospital import orthanc as orthanc_mod
from tests.keras_app.hospital.test_dicom_node import results, uid_of, wait_results
from tests.keras_app.inference.test_export import write_run

NODE_AET = "KERASAPP"
USER, PASSWORD, TOKEN = "node", "s3cret-pass", "s3cret-token"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return certs.self_signed(tmp_path_factory.mktemp("tls"), "pacs")


@pytest.fixture(scope="module")
def node_port():
    return orthanc_mod.free_port()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, tls_files, node_port):
    """An Orthanc whose DIMSE is TLS only, and an HTTPS front demanding credentials."""
    reason = orthanc_mod.missing_reason()
    if reason:
        pytest.skip(reason)
    if not xray_dicom.DATA.is_dir():
        pytest.skip(f"chest X-rays not found at {xray_dicom.DATA}")
    node = {"AET": NODE_AET, "Host": "127.0.0.1", "Port": node_port, "UseDicomTls": True}
    server = orthanc_mod.Orthanc(
        tmp_path_factory.mktemp("orthanc"), {"kerasapp": node}, dicom_tls=tls_files
    ).start()
    proxy = https_proxy.HttpsProxy(
        server.url, *tls_files, user=USER, password=PASSWORD, token=TOKEN
    ).start()
    server.https = proxy
    yield server
    proxy.stop()
    server.stop()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from keras_app.inference.predictor import open_predictor

    return open_predictor(write_run(tmp_path_factory.mktemp("secure_model") / "run"))


def secrets(tmp_path, tls_files) -> dict:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    return {
        "basic": HttpAuth(USER, tmp_path / "password", ca=tls_files[0]),
        "bearer": HttpAuth(token_file=tmp_path / "token", ca=tls_files[0]),
    }


def test_dimse_over_tls_both_ways(pacs, predictor, tls_files, node_port, tmp_path):
    """Orthanc sends over TLS to the node, which stores its answers over TLS."""
    tls = Tls(*tls_files, ca=tls_files[0])
    pacs_address = Pacs("127.0.0.1", pacs.dicom_port, pacs.ae_title)
    node = DicomNode(
        Spool(tmp_path / "spool"),
        Analyser(predictor),
        CStoreSender(pacs_address, NODE_AET, tls=tls.client_context()),
        ae_title=NODE_AET,
        port=node_port,
        allow=[Caller.parse("ORTHANC@127.0.0.1")],
        tls=tls.server_context(),
        backoff=Backoff(0.2, 1.0),
    )
    data, _ = xray_dicom.make_xray(xray_dicom.xray_files(1)[0], "cr", accession="TLS1")
    with node:
        pacs.send("kerasapp", [pacs.upload(data)["ParentStudy"]])
        found = wait_results(pacs, uid_of(data), 2)
    [sr] = [d for d in found if d.Modality == "SR"]
    assert read_sr(sr)["analysed"] and read_sr(sr)["source"] == uid_of(data, "SOPInstanceUID")


@pytest.mark.parametrize("kind", ["basic", "bearer"])
def test_dicomweb_over_https_with_credentials(pacs, predictor, tls_files, tmp_path, kind):
    data, _ = xray_dicom.make_xray(xray_dicom.xray_files(2)[1], "cr", accession=f"WEB-{kind}")
    pacs.upload(data)
    secret = secrets(tmp_path, tls_files)[kind]
    argv = ["--model", str(predictor.path), "--dicomweb", f"{pacs.https.url}/dicom-web"]
    argv += ["--study", uid_of(data), "--http-ca", str(tls_files[0])]
    if kind == "basic":
        argv += ["--http-user", USER, "--http-password-file", str(secret.password_file)]
    else:
        argv += ["--http-token-file", str(secret.token_file)]
    assert run_cli(dicom_node_cli.main, argv) == 0
    assert len(results(pacs, uid_of(data))) == 2


def test_wrong_credentials_or_an_untrusted_certificate_are_one_line(
    pacs, predictor, tls_files, tmp_path, capsys
):
    (tmp_path / "token").write_text("not-the-token")
    base = ["--model", str(predictor.path), "--dicomweb", f"{pacs.https.url}/dicom-web"]
    base += ["--study", "1.2.3"]
    wrong = [*base, "--http-token-file", str(tmp_path / "token"), "--http-ca", str(tls_files[0])]
    assert run_cli(dicom_node_cli.main, wrong) == 2
    assert "answered 401 Unauthorized: check --http-user" in capsys.readouterr().err
    untrusted = [*base, "--http-token-file", str(tmp_path / "token")]
    assert run_cli(dicom_node_cli.main, untrusted) == 2
    assert "certificate is not trusted" in capsys.readouterr().err


def test_pull_over_https_with_basic_auth_answers_by_stow(
    pacs, predictor, tls_files, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="keras_app.dicom_node")
    session = http_session(secrets(tmp_path, tls_files)["basic"])
    spool = Spool(tmp_path / "spool")
    node = DicomNode(
        spool,
        Analyser(predictor),
        StowSender(dicomweb_client(f"{pacs.https.url}/dicom-web", session)),
        listen=False,
        follow=(session, pacs.https.url),
        backoff=Backoff(0.2, 1.0),
    )
    node.feed.poll = 0.2
    with node:
        deadline = time.monotonic() + 60
        while not (spool.root / "cursor.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        data, _ = xray_dicom.make_xray(xray_dicom.xray_files(3)[2], "cr", accession="PULL1")
        pacs.upload(data)
        assert len(wait_results(pacs, uid_of(data), 2)) == 2
    assert "PULL1  pneumonia " in caplog.text
