"""The DICOM node against a real Orthanc: a burst of studies from several senders, timed
from each study's send to its SR in the PACS.

The node runs as the command line runs it, in its own process (`python -m
keras_app.dicom_node`, Grad-CAM overlays on): an untrained MobileNet v1 (alpha 0.25,
224 px, weights None: speed does not depend on the weights' values). Orthanc is started
from a generated configuration, as in the tests. Studies are one CR image each
(MONOCHROME2, 8 bits, 224 x 224) made from the test split of ../shared/data/chest_xray_224.

    push   --senders threads, each a modality C-STOREing its share of --burst studies
           straight to the node (the node's Storage SCP), one after another. A study is
           sent when its C-STORE is acknowledged (the node has spooled it).
    pull   the same threads store their studies into Orthanc (REST POST /instances, as a
           modality's C-STORE would); the node follows Orthanc's change log (--follow).
           A study is sent when Orthanc has stored it.

In both, a study's result time is when its SR appears in Orthanc's change log (read
every 50 ms), and its overlay time when its Grad-CAM overlay does (the node stores the
finding first, its explanation after); latency is that time minus the send time. Both
are reported. Before the burst, --warmup studies are sent one at a time (tracing, first
loads).

    .venv/bin/python benchmarks/dicom_node.py
    .venv/bin/python benchmarks/dicom_node.py --mode push --burst 20 --senders 4 --json out.json

Needs the Orthanc and orthanc-dicomweb Debian packages and ../shared/data/chest_xray_224.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import requests  # noqa: E402

from tests.keras_app.hospital import orthanc as orthanc_mod  # noqa: E402
from tests.keras_app.hospital import xray_dicom  # noqa: E402

NODE_AET = "KERASAPP"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["push", "pull", "both"], default="both")
    p.add_argument("--burst", type=int, default=20, help="studies in the burst")
    p.add_argument("--senders", type=int, default=4, help="senders sending at once")
    p.add_argument("--warmup", type=int, default=3, help="studies sent one at a time first")
    p.add_argument("--no-overlay", action="store_true", help="run the node with --no-overlay")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--keep-log", action="store_true", help="print the node's log at the end")
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


def studies(n: int, start: int, prefix: str) -> list[bytes]:
    files = xray_dicom.xray_files(start + n)[start:]
    return [
        xray_dicom.make_xray(f, "cr", accession=f"{prefix}{start + i}")[0]
        for i, f in enumerate(files)
    ]


def source_uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def answer_uids(files: list[bytes], run: Path) -> dict[str, tuple[str, str]]:
    """{SR or overlay UID: ("sr" or "overlay", source UID)}: the node derives them from
    the source image and the model (`ResultUids.for_source`)."""
    from types import SimpleNamespace

    from keras_app.hospital.answers import model_version
    from keras_app.hospital.results import ResultUids

    key = f"{run.name}:{model_version(SimpleNamespace(kind='keras', path=run))}"
    found = {}
    for data in files:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        uids = ResultUids.for_source(header, key)
        found[uids.sr] = ("sr", str(header.SOPInstanceUID))
        found[uids.overlay] = ("overlay", str(header.SOPInstanceUID))
    return found


class ResultWatch(threading.Thread):
    """Reads Orthanc's change log every 50 ms and notes when each expected answer
    arrives: `seen[("sr" or "overlay", source UID)] = perf_counter()`."""

    def __init__(self, pacs):
        super().__init__(daemon=True)
        self.pacs, self.seen, self.expected = pacs, {}, {}
        self.halt = threading.Event()
        last = requests.get(f"{pacs.url}/changes", params={"last": ""}, timeout=10).json()
        self.since = last["Last"]

    def run(self) -> None:
        while not self.halt.is_set():
            page = requests.get(
                f"{self.pacs.url}/changes", params={"since": self.since, "limit": 200}, timeout=10
            ).json()
            now = time.perf_counter()
            for change in page["Changes"]:
                self.since = change["Seq"]
                if change["ChangeType"] == "NewInstance":
                    info = requests.get(
                        f"{self.pacs.url}/instances/{change['ID']}", timeout=10
                    ).json()
                    uid = info["MainDicomTags"]["SOPInstanceUID"]
                    if uid in self.expected:
                        self.seen.setdefault(self.expected[uid], now)
            if page["Done"]:
                self.halt.wait(0.05)

    def wait(self, keys: list[tuple[str, str]], timeout: float = 600) -> dict:
        deadline = time.perf_counter() + timeout
        while not all(k in self.seen for k in keys):
            if time.perf_counter() > deadline:
                missing = sum(k not in self.seen for k in keys)
                raise RuntimeError(f"{missing} answers did not arrive in {timeout} s")
            time.sleep(0.05)
        return {k: self.seen[k] for k in keys}


def push_sender(port: int, calling: str):
    from pynetdicom import AE

    def send(data: bytes) -> None:
        ae = AE(ae_title=calling)
        ae.add_requested_context(xray_dicom.CR)
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
        if not assoc.is_established:
            raise RuntimeError(f"{calling}: no association with the node")
        status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
        assoc.release()
        if getattr(status, "Status", None) != 0:
            raise RuntimeError(f"{calling}: C-STORE status {status}")

    return send


def burst(send_for, files: list[bytes], senders: int) -> dict[str, float]:
    """Sends `files` from `senders` threads at once; the send time of each."""
    sent: dict[str, float] = {}
    shares = [files[i::senders] for i in range(senders)]

    def run(i: int) -> None:
        send = send_for(i)
        for data in shares[i]:
            send(data)
            sent[source_uid(data)] = time.perf_counter()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent


def start_node(args, run: Path, pacs, mode: str, port: int, spool: Path, log: Path):
    argv = [sys.executable, "-m", "keras_app.dicom_node", "--model", str(run)]
    argv += ["--pacs", f"127.0.0.1:{pacs.dicom_port}:{pacs.ae_title}", "--spool", str(spool)]
    if mode == "pull":
        argv += ["--follow", pacs.url, "--no-listen"]
    else:
        argv += ["--port", str(port)] + [f"--allow=SENDER{i}" for i in range(args.senders)]
    if args.no_overlay:
        argv.append("--no-overlay")
    with open(log, "ab") as out:
        node = subprocess.Popen(argv, stdout=out, stderr=out, cwd=REPO)
    deadline = time.monotonic() + 300
    ready = (spool / "cursor.json") if mode == "pull" else None
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"the node exited:\n{log.read_text()[-3000:]}")
        if ready is not None and ready.is_file():
            return node
        if ready is None and _listening(port):
            return node
        time.sleep(0.5)
    raise RuntimeError("the node did not start in 300 s")


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def measure(args, mode: str, run: Path, tmp: Path) -> dict:
    port = orthanc_mod.free_port()
    pacs = orthanc_mod.Orthanc(tmp / f"orthanc-{mode}", {}).start()
    warmup, files = studies(args.warmup, 400, "W"), studies(args.burst, 0, "B")
    watch = ResultWatch(pacs)
    watch.expected = answer_uids(warmup + files, run)
    kinds = ["sr"] if args.no_overlay else ["sr", "overlay"]
    watch.start()
    node = start_node(args, run, pacs, mode, port, tmp / f"spool-{mode}", tmp / f"{mode}.log")
    try:
        if mode == "push":
            send_for = lambda i: push_sender(port, f"SENDER{i}")  # noqa: E731
        else:
            send_for = lambda i: pacs.upload  # noqa: E731
        for data in warmup:  # one at a time: tracing, first loads
            burst(send_for, [data], 1)
            watch.wait([(k, source_uid(data)) for k in kinds])
        before = machine()
        start = time.perf_counter()
        sent = burst(send_for, files, args.senders)
        arrived = watch.wait([(k, uid) for k in kinds for uid in sent])
    finally:
        node.terminate()
        node.wait(timeout=60)
        watch.halt.set()
        pacs.stop()
        if args.keep_log:
            print((tmp / f"{mode}.log").read_text()[-6000:], file=sys.stderr)
    found = {
        "mode": mode,
        "studies": len(sent),
        "senders": args.senders,
        "sending_s": round(max(sent.values()) - start, 2),
        "burst_s": round(max(arrived.values()) - start, 2),
        "machine_before": before,
        "machine_after": machine(),
    }
    for kind in kinds:
        latency = np.array([arrived[(kind, u)] - sent[u] for u in sent])
        found[f"send_to_{kind}_s"] = {
            "p50": round(float(np.percentile(latency, 50)), 2),
            "p95": round(float(np.percentile(latency, 95)), 2),
            "max": round(float(latency.max()), 2),
        }
    return found


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def measure_each(args, kinds, measure_one) -> list[dict]:
    """`measure_one(args, kind, run, tmp)` for each kind, against a fresh untrained run;
    the results printed (and written to --json) as JSON."""
    if orthanc_mod.missing_reason() or not xray_dicom.DATA.is_dir():
        sys.exit(orthanc_mod.missing_reason() or f"no chest X-rays at {xray_dicom.DATA}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = write_run(tmp / "run")
        found = [measure_one(args, kind, run, tmp) for kind in kinds]
    print(json.dumps(found, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=2))
    return found


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    return measure_each(args, ["push", "pull"] if args.mode == "both" else [args.mode], measure)


if __name__ == "__main__":
    main()
