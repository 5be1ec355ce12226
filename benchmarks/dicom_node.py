"""The DICOM node against a real Orthanc: throughput and C-STORE-to-SR latency.

An untrained MobileNet v1 (alpha 0.25, 224 px, weights None: speed does not
depend on the weights' values) runs as the node, in this process, with the
settings of the command line (Grad-CAM overlays on, 0.3 s settle, spool on
disk). Orthanc (started from a generated configuration, as in the tests) holds
one-image studies made from real chest X-rays (CR, MONOCHROME2, 224 px).

    latency     --sequential studies, one at a time: from Orthanc's synchronous
                C-STORE to the node returning (the instance is spooled) until the
                study's SR is in Orthanc (polled every 20 ms by its SOP Instance UID,
                which the node derives from the source). p50 and p95.
    throughput  --burst studies in one Orthanc job: from the job's start until the
                last SR is in Orthanc. Studies per minute.

    .venv/bin/python benchmarks/dicom_node.py
    .venv/bin/python benchmarks/dicom_node.py --sequential 10 --burst 20 --json out.json

Needs the Orthanc and orthanc-dicomweb Debian packages and ../shared/data/chest_xray_224.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import requests  # noqa: E402

from keras_app.hospital.node import Analyser, DicomNode  # noqa: E402
from keras_app.hospital.pacs import CStoreSender, Pacs  # noqa: E402
from keras_app.hospital.results import ResultUids  # noqa: E402
from keras_app.hospital.spool import Spool  # noqa: E402
from tests.keras_app.hospital import orthanc as orthanc_mod  # noqa: E402
from tests.keras_app.hospital import xray_dicom  # noqa: E402

NODE_AET = "KERASAPP"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequential", type=int, default=20, help="studies for the latency")
    p.add_argument("--burst", type=int, default=40, help="studies for the throughput")
    p.add_argument("--json", default=None, help="also write the figures here")
    return p.parse_args(argv)


def write_run(path: Path) -> Path:
    """A run folder holding an untrained MobileNet v1 0.25 at 224 px."""
    import keras

    from keras_app.model.classifier import build_classifier

    keras.utils.set_random_seed(0)
    path.mkdir(parents=True)
    model = build_classifier("mobilenet", 2, (224, 224), weights=None, alpha=0.25)
    model.save(path / "best.keras")
    (path / "labels.txt").write_text("NORMAL\nPNEUMONIA\n")
    (path / "config.json").write_text(json.dumps({"model": "mobilenet", "image_size": [224, 224]}))
    return path


def studies(n: int, start: int) -> list[bytes]:
    files = xray_dicom.xray_files(start + n)[start:]
    return [
        xray_dicom.make_xray(f, "cr", accession=f"B{start + i}")[0] for i, f in enumerate(files)
    ]


def sr_uid(data: bytes, analyser: Analyser) -> str:
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    key = f"{analyser.predictor.name}:{analyser.version}"
    return ResultUids.for_source(header, key).sr


def arrived(pacs, uid: str) -> bool:
    return bool(requests.post(f"{pacs.url}/tools/lookup", data=uid, timeout=10).json())


def wait_for(pacs, uids: list[str], timeout: float = 600) -> list[float]:
    """Arrival time (perf_counter) of each SR, polling every 20 ms."""
    times: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(times) < len(uids) and time.perf_counter() < deadline:
        for uid in uids:
            if uid not in times and arrived(pacs, uid):
                times[uid] = time.perf_counter()
        time.sleep(0.02)
    if len(times) < len(uids):
        raise RuntimeError(f"{len(uids) - len(times)} SRs did not arrive in {timeout} s")
    return [times[u] for u in uids]


def measure_latency(pacs, analyser, files: list[bytes]) -> list[float]:
    latencies = []
    for data in files:
        study = pacs.upload(data)["ParentStudy"]
        uid = sr_uid(data, analyser)
        pacs.send("kerasapp", [study])  # synchronous: returns once the node acknowledged
        sent = time.perf_counter()
        latencies.append(wait_for(pacs, [uid])[0] - sent)
    return latencies


def measure_throughput(pacs, analyser, files: list[bytes]) -> float:
    ids = [pacs.upload(data)["ParentStudy"] for data in files]
    uids = [sr_uid(data, analyser) for data in files]
    start = time.perf_counter()
    pacs.send("kerasapp", ids, synchronous=False)
    last = max(wait_for(pacs, uids))
    return len(files) / ((last - start) / 60)


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if orthanc_mod.missing_reason() or not xray_dicom.DATA.is_dir():
        sys.exit(orthanc_mod.missing_reason() or f"no chest X-rays at {xray_dicom.DATA}")
    from keras_app.inference.predictor import open_predictor

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = orthanc_mod.free_port()
        pacs = orthanc_mod.Orthanc(tmp / "orthanc", {"kerasapp": (NODE_AET, "127.0.0.1", port)})
        pacs.start()
        analyser = Analyser(open_predictor(write_run(tmp / "run")))
        store = CStoreSender(Pacs("127.0.0.1", pacs.dicom_port, pacs.ae_title), NODE_AET)
        node = DicomNode(Spool(tmp / "spool"), analyser, store, ae_title=NODE_AET, port=port)
        node.start()
        try:
            measure_latency(pacs, analyser, studies(2, 400))  # warm-up: tracing, first loads
            before = machine()
            latencies = measure_latency(pacs, analyser, studies(args.sequential, 0))
            per_minute = measure_throughput(pacs, analyser, studies(args.burst, args.sequential))
        finally:
            node.stop()
            pacs.stop()
    result = {
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50) * 1000),
            "p95": float(np.percentile(latencies, 95) * 1000),
            "n": len(latencies),
        },
        "throughput_studies_per_min": per_minute,
        "burst": args.burst,
        "machine_before": before,
        "machine_after": machine(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
