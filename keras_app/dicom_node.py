"""python -m keras_app.dicom_node: the classifier as a DICOM node inside a hospital's PACS.

    python -m keras_app.dicom_node --model saved_models/pneumonia --ae-title KERASAPP \\
        --port 11112 --pacs pacs.example:4242:ORTHANC --spool /var/spool/kerasapp
    python -m keras_app.dicom_node --model saved_models/pneumonia \\
        --dicomweb http://pacs.example:8042/dicom-web --study 1.2.840...

As a Storage SCP (pynetdicom) it accepts CR, DX and Secondary Capture images by
C-STORE. Each is written to the spool before the C-STORE is acknowledged; a
worker thread answers what the spool holds: it predicts, and C-STOREs to the
PACS a Comprehensive SR and, for a Keras model, a Grad-CAM overlay, both in the
image's study (keras_app.dicom_results). Prediction or storage failures are
retried with exponential back-off; what is pending when the node stops is
answered when it starts again. Other objects are acknowledged, logged and
skipped, so a PACS routing a whole study is never refused.

With --dicomweb it answers one study instead: QIDO-RS and WADO-RS to read it,
STOW-RS to store the results.

Logging: one line per answered study (accession or study UID, finding,
probability, milliseconds); warnings for what is skipped or retried.
TensorFlow is imported only once the flags are parsed.
"""

from __future__ import annotations

import logging
import sys
import threading

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.hospital.pacs import Pacs, check_ae_title

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
    p.add_argument("--ae-title", default="KERASAPP", help="the node's AE title")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port to listen on")
    p.add_argument("--pacs", help="where results go by C-STORE: HOST:PORT:AET")
    p.add_argument("--spool", default="dicom_spool", help="folder for received instances")
    p.add_argument("--dicomweb", help="DICOMweb root URL: answer --study there, then exit")
    p.add_argument("--study", help="Study Instance UID to answer with --dicomweb")
    p.add_argument("--no-overlay", action="store_true", help="SR only, no Grad-CAM overlay")
    return p.parse_args(argv)


def check_args(args) -> None:
    """Flag combinations argparse cannot express, each a UsageError naming the flag."""
    check_ae_title(args.ae_title, "--ae-title")
    if args.dicomweb or args.study:
        if not (args.dicomweb and args.study):
            raise UsageError("--dicomweb and --study go together: a DICOMweb URL and one study")
        if args.pacs:
            raise UsageError("--pacs is for the C-STORE node; with --dicomweb results go by STOW")
        return
    if not args.pacs:
        raise UsageError("--pacs HOST:PORT:AET is required: where the results are stored")
    Pacs.parse(args.pacs)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535. Received --port={args.port}")


def open_model(args):
    from keras_app.inference.predictor import open_predictor, open_server

    if args.server or args.grpc:
        return open_server(args.server, grpc=args.grpc, name=args.name)
    return open_predictor(args.model)


def configure_logging() -> None:
    """The node's study lines at INFO; from the libraries (pynetdicom logs each association,
    highdicom each module it copies) only warnings, so a healthy run is one line a study."""
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)


def serve(args, analyser) -> None:
    """Runs the node until interrupted."""
    from keras_app.hospital.node import DicomNode
    from keras_app.hospital.pacs import CStoreSender
    from keras_app.hospital.spool import Spool

    store = CStoreSender(Pacs.parse(args.pacs), args.ae_title)
    node = DicomNode(
        Spool(args.spool), analyser, store, ae_title=args.ae_title, host=args.host, port=args.port
    )
    try:
        node.start()
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    try:
        threading.Event().wait()  # until Ctrl-C
    finally:
        node.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    configure_logging()
    import_tensorflow()
    from keras_app.hospital.node import Analyser, answer_dicomweb_study

    analyser = Analyser(open_model(args), overlays=not args.no_overlay)
    if args.dicomweb:
        answer_dicomweb_study(analyser, args.dicomweb, args.study)
    else:
        serve(args, analyser)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
