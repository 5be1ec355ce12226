"""python -m keras_app.dicom_node: the classifier as a DICOM node inside a hospital's PACS.

    # pull: follow Orthanc's change log (nothing routed is lost while the node is down)
    python -m keras_app.dicom_node --model runs/RUN --follow http://pacs.example:8042 \\
        --no-listen --pacs pacs.example:4242:ORTHANC --spool /var/spool/kerasapp
    # push: a Storage SCP the PACS sends to by C-STORE
    python -m keras_app.dicom_node --model runs/RUN --ae-title KERASAPP --port 11112 \\
        --allow ORTHANC@pacs.example --pacs pacs.example:4242:ORTHANC --spool /var/spool/kerasapp
    # one study over DICOMweb
    python -m keras_app.dicom_node --model runs/RUN --dicomweb http://pacs.example:8042/dicom-web \\
        --study 1.2.840...

Every image gets an answer in the PACS, in its study: a Comprehensive SR (and, for a
Keras model, a Grad-CAM overlay), or an SR saying "not analysed" and why (the header
policy refused it, its pixel data is damaged, the model's image guard refused it).
Each received image is in the spool before it counts as received; answers are stored
by C-STORE (--pacs) or STOW-RS (--dicomweb), retried with back-off.

Logging: one line per study answered and per image not analysed (accession or study
UID, never the patient's name, ID or birth date); a warning for each refusal.
TensorFlow is imported only once the flags are parsed. docs/DICOM_NODE.md has the rest.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.hospital.pacs import Caller, Pacs, Tls, check_ae_title

log = logging.getLogger("keras_app.dicom_node")


def parse_args(argv=None):
    p = ArgumentParser(
        prog="python -m keras_app.dicom_node",
        description="Answer chest X-rays sent by a PACS with a DICOM SR and a Grad-CAM overlay.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="run folder, .keras file or exported model")
    source.add_argument("--server", help="TF Serving REST address, e.g. http://localhost:8501")
    source.add_argument("--grpc", help="TF Serving gRPC address, e.g. localhost:8500")
    p.add_argument("--name", default="pneumonia", help="model name on the TF Serving server")
    _intake_flags(p)
    p.add_argument("--pacs", help="where answers go by C-STORE: HOST:PORT:AET")
    p.add_argument("--pacs-tls", action="store_true", help="C-STORE answers over TLS")
    p.add_argument(
        "--dicomweb",
        help="a DICOMweb root URL: with --study, answer that study; otherwise where answers "
        "go by STOW-RS (instead of --pacs)",
    )
    p.add_argument("--study", help="Study Instance UID to answer with --dicomweb, then exit")
    _http_flags(p)
    p.add_argument("--spool", default="dicom_spool", help="folder for received instances")
    p.add_argument(
        "--usage-log",
        metavar="PATH",
        help="append one JSON line per answered image (no patient data; UIDs as keyed "
        "hashes) for python -m keras_app.monitor",
    )
    p.add_argument(
        "--spool-max-mb",
        type=int,
        default=4096,
        help="the most the spool holds (incoming and failed); past it C-STOREs are refused "
        "as out of resources and the pull pauses (about 200 uncompressed 43 cm radiographs)",
    )
    p.add_argument("--header-policy", help="JSON file: what the model reads (docs/DICOM_NODE.md)")
    p.add_argument("--no-overlay", action="store_true", help="SR only, no Grad-CAM overlay")
    return p.parse_args(argv)


def _intake_flags(p) -> None:
    p.add_argument("--ae-title", default="KERASAPP", help="the node's AE title")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port to listen on")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AET[@HOST]",
        help="a caller that may send images (repeat for more); others are rejected",
    )
    p.add_argument(
        "--max-associations",
        type=int,
        default=8,
        help="associations open at once; more are rejected (the sender retries)",
    )
    p.add_argument("--tls-cert", help="the node's certificate (PEM): DIMSE over TLS")
    p.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    p.add_argument(
        "--tls-ca", help="certificates trusted (PEM): callers and the PACS must present one"
    )
    p.add_argument("--no-listen", action="store_true", help="no Storage SCP (with --follow)")
    p.add_argument(
        "--follow",
        metavar="URL",
        help="Orthanc's REST root: pull new images from its change log (loses nothing "
        "routed while the node is down)",
    )


def _http_flags(p) -> None:
    p.add_argument("--http-user", help="basic auth user for --follow and --dicomweb")
    p.add_argument("--http-password-file", help="a file holding --http-user's password")
    p.add_argument("--http-token-file", help="a file holding a bearer token")
    p.add_argument("--http-ca", help="CA bundle (PEM) to verify HTTPS servers with")


def check_args(args) -> None:
    """Flag combinations argparse cannot express, each a UsageError naming the flag."""
    check_ae_title(args.ae_title, "--ae-title")
    if args.study:
        if not args.dicomweb:
            raise UsageError("--study needs --dicomweb: the DICOMweb URL the study is at")
        if args.pacs or args.follow:
            raise UsageError("--study answers one study over DICOMweb: no --pacs or --follow")
        return
    if bool(args.pacs) == bool(args.dicomweb):
        raise UsageError(
            "where do answers go? give --pacs HOST:PORT:AET (C-STORE) or --dicomweb URL "
            "(STOW-RS), one of them"
        )
    if args.pacs:
        Pacs.parse(args.pacs)
    elif args.pacs_tls:
        raise UsageError("--pacs-tls is for --pacs: answers by C-STORE over TLS")
    if args.no_listen and not args.follow:
        raise UsageError("--no-listen leaves no intake: add --follow URL")
    if not args.no_listen:
        if not 0 < args.port < 65536:
            raise UsageError(f"--port must be in 1..65535. Received --port={args.port}")
        if not args.allow:
            raise UsageError(
                "--allow AET[@HOST] is required: the callers that may send images "
                "(e.g. --allow ORTHANC@127.0.0.1)"
            )
    if args.max_associations < 1:
        raise UsageError(f"--max-associations must be >= 1. Received {args.max_associations}")
    if args.spool_max_mb < 1:
        raise UsageError(f"--spool-max-mb must be >= 1. Received {args.spool_max_mb}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")


def security(args):
    """The allowed callers, the TLS contexts and the HTTP session, or a UsageError."""
    from keras_app.hospital.web import HttpAuth, http_session

    allow = [Caller.parse(text) for text in args.allow]
    tls = Tls(*(Path(f) if f else None for f in (args.tls_cert, args.tls_key, args.tls_ca)))
    try:
        server = tls.server_context() if args.tls_cert and not args.no_listen else None
        client = tls.client_context() if args.pacs_tls else None
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        raise UsageError(f"TLS: cannot load the certificates ({err})") from None
    auth = HttpAuth(
        args.http_user,
        Path(args.http_password_file) if args.http_password_file else None,
        Path(args.http_token_file) if args.http_token_file else None,
        Path(args.http_ca) if args.http_ca else None,
    )
    return allow, server, client, http_session(auth)


def check_credentials(args, session) -> None:
    """One request to each HTTP server the node uses, before the model loads: a wrong
    password or CA is one line and exit 2 now, not a warning repeated in a loop."""
    from keras_app.hospital.web import check_http

    if args.follow:
        check_http(session, args.follow, "/system")  # Orthanc's REST API
    if args.dicomweb:
        check_http(session, args.dicomweb, "/studies?limit=1")  # QIDO-RS


def header_policy(args):
    from keras_app.decision.header_policy import HeaderPolicy

    return HeaderPolicy.from_file(args.header_policy) if args.header_policy else HeaderPolicy()


def open_model(args):
    from keras_app.inference.predictor import open_predictor, open_server

    if args.server or args.grpc:
        return open_server(args.server, grpc=args.grpc, name=args.name)
    return open_predictor(args.model)


def configure_logging() -> None:
    """The node's lines at INFO; from the libraries only warnings, so a healthy run is one
    line a study. pydicom's decoders log a traceback for each damaged codestream (the
    node says it in one line), and its reading validation may quote a value it could not
    parse, a patient's name among them: both are off."""
    import pydicom

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)
    logging.getLogger("pydicom.pixels.decoders.base").setLevel(logging.CRITICAL)
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def serve(args, analyser, policy, security_) -> None:
    """Runs the node until interrupted."""
    from keras_app.hospital.node import DicomNode
    from keras_app.hospital.pacs import CStoreSender
    from keras_app.hospital.spool import Spool
    from keras_app.hospital.web import StowSender, dicomweb_client

    allow, server_tls, client_tls, session = security_
    if args.pacs:
        store = CStoreSender(Pacs.parse(args.pacs), args.ae_title, tls=client_tls)
    else:
        store = StowSender(dicomweb_client(args.dicomweb, session))
    node = DicomNode(
        Spool(args.spool, max_bytes=args.spool_max_mb * 1_000_000),
        analyser,
        store,
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        allow=allow,
        max_associations=args.max_associations,
        tls=server_tls,
        listen=not args.no_listen,
        follow=(session, args.follow) if args.follow else None,
        policy=policy,
        on_record=usage_recorder(args.usage_log),
    )
    try:
        node.start()
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    log.info("ready: %s", describe(args, analyser, node))
    stopping = threading.Event()
    # systemd stops a service with SIGTERM: stop as cleanly as after Ctrl-C, and exit 0.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        stopping.wait()
    finally:
        node.stop()
        log.info(
            "stopped: %d image(s) wait in %s for the next start",
            len(node.spool.pending()),
            args.spool,
        )


def usage_recorder(path: str | None):
    """The node's `on_record`: a line of the usage log per answered image (None: no log)."""
    if not path:
        return None
    from keras_app.inference.usage_log import UsageLog

    usage = UsageLog(path, source="dicom_node")
    return lambda fields: usage.record(**fields)


def describe(args, analyser, node) -> str:
    """The ready line: what the node answers with, where from, where to."""
    intakes = []
    if node.scp is not None:
        secure = " over TLS" if args.tls_cert else ""
        allowed = ", ".join(args.allow)
        intakes.append(
            f"listening as {args.ae_title} on {args.host}:{args.port}{secure} for {allowed}"
        )
    if node.feed is not None:
        intakes.append(f"following {args.follow}")
    answers = f"C-STORE to {args.pacs}" if args.pacs else f"STOW-RS to {args.dicomweb}"
    if args.pacs_tls:
        answers += " over TLS"
    model = f"{analyser.predictor.name} {analyser.version}"
    return f"model {model}; {'; '.join(intakes)}; answers by {answers}; spool {args.spool}"


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    secure = security(args)
    policy = header_policy(args)
    check_credentials(args, secure[3])
    configure_logging()
    import_tensorflow()
    from keras_app.hospital.answers import Analyser
    from keras_app.hospital.web import answer_dicomweb_study, dicomweb_client

    analyser = Analyser(open_model(args), overlays=not args.no_overlay)
    if args.study:
        client = dicomweb_client(args.dicomweb, secure[3])
        answer_dicomweb_study(analyser, client, args.study, policy=policy)
    else:
        serve(args, analyser, policy, secure)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
