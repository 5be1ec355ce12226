"""Which intake loses nothing while the DICOM node restarts: measured against a real Orthanc.

Three designs, each with the node running as the command line runs it (its own process):

    readme-lua   Orthanc's Lua route of the README before issue 29: OnStoredInstance
                 calls SendToModality (one synchronous try) for each CR or DX image.
    jobs-retry   The Lua route through Orthanc's jobs API: an asynchronous store job per
                 image, and OnJobFailure resubmits a failed store job (Lua cannot wait).
    pull         The node follows Orthanc's change log (--follow), no route in Orthanc.

For each: one study answered (warm-up), the node stopped (SIGTERM) and started again
after `--down` seconds, with `--studies` studies stored in Orthanc, evenly, while it was
down. Reported: how many of them were answered within `--wait` seconds of the restart,
how long the last took, and for the jobs route how many times Orthanc retried meanwhile.

    .venv/bin/python benchmarks/dicom_node_intake.py
    .venv/bin/python benchmarks/dicom_node_intake.py --design pull --down 10 --json out.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.dicom_node import (  # noqa: E402
    ResultWatch,
    answer_uids,
    measure_each,
    source_uid,
    studies,
)
from tests.keras_app.hospital import orthanc as orthanc_mod  # noqa: E402

ROUTE_FILTER = (
    "(tags['Modality'] == 'CR' or tags['Modality'] == 'DX') and tags['Manufacturer'] ~= 'keras-app'"
)
LUA = {
    "readme-lua": f"""
function OnStoredInstance(instanceId, tags, metadata, origin)
  if {ROUTE_FILTER} then
    SendToModality(instanceId, 'kerasapp')
  end
end
""",
    "jobs-retry": f"""
function OnStoredInstance(instanceId, tags, metadata, origin)
  if {ROUTE_FILTER} then
    local job = {{Resources = {{instanceId}}, Asynchronous = true}}
    RestApiPost('/modalities/kerasapp/store', DumpJson(job, true), false)
  end
end
function OnJobFailure(jobId)
  local job = ParseJson(RestApiGet('/jobs/' .. jobId))
  if job['Type'] == 'DicomModalityStore' then
    print('keras-app route: resubmitting ' .. jobId)
    RestApiPost('/jobs/' .. jobId .. '/resubmit', '')
  end
end
""",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--design", choices=["readme-lua", "jobs-retry", "pull", "all"], default="all")
    p.add_argument("--down", type=float, default=10.0, help="seconds the node is down")
    p.add_argument("--studies", type=int, default=4, help="studies stored while it is down")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait after restart")
    p.add_argument("--json", default=None, help="also write the figures here")
    return p.parse_args(argv)


class RoutedOrthanc(orthanc_mod.Orthanc):
    def __init__(self, root: Path, modalities: dict, lua: str | None):
        super().__init__(root, modalities)
        self.lua = lua

    def config(self) -> dict:
        config = super().config()
        if self.lua:
            script = self.root / "route.lua"
            script.write_text(self.lua)
            config["LuaScripts"] = [str(script)]
            config["JobsHistorySize"] = 1000  # keep the failed jobs to be counted
        return config


def start_node(design: str, run: Path, pacs, port: int, spool: Path, log: Path):
    import subprocess

    argv = [sys.executable, "-m", "keras_app.dicom_node", "--model", str(run), "--no-overlay"]
    argv += ["--pacs", f"127.0.0.1:{pacs.dicom_port}:{pacs.ae_title}", "--spool", str(spool)]
    if design == "pull":
        argv += ["--follow", pacs.url, "--no-listen"]
    else:
        argv += ["--port", str(port), "--allow", "ORTHANC@127.0.0.1"]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=out, cwd=REPO)


def wait_started(node, log: Path, lives: int) -> None:
    """Until the node's `lives`-th "ready:" line (its model loaded, its intake open)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"the node exited:\n{log.read_text()[-3000:]}")
        if log.is_file() and log.read_text().count(" ready: ") >= lives:
            return
        time.sleep(0.1)
    raise RuntimeError("the node did not start in 300 s")


def measure(args, design: str, run: Path, tmp: Path) -> dict:
    port = orthanc_mod.free_port()
    pacs = RoutedOrthanc(
        tmp / f"orthanc-{design}", {"kerasapp": ("KERASAPP", "127.0.0.1", port)}, LUA.get(design)
    ).start()
    warm, down = studies(1, 300, "W"), studies(args.studies, 200, "D")
    watch = ResultWatch(pacs)
    watch.expected = answer_uids(warm + down, run)
    watch.start()
    spool, log = tmp / f"spool-{design}", tmp / f"{design}.log"
    node = start_node(design, run, pacs, port, spool, log)
    try:
        wait_started(node, log, 1)
        pacs.upload(warm[0])
        watch.wait([("sr", source_uid(warm[0]))], timeout=300)
        node.terminate()  # a restart: systemctl restart sends SIGTERM, then starts again
        node.wait(timeout=60)
        stopped = time.perf_counter()
        lines_before = pacs.log.read_text().count("\n")
        for data in down:
            time.sleep(args.down / (len(down) + 1))
            pacs.upload(data)
        time.sleep(max(0.0, args.down - (time.perf_counter() - stopped)))
        retries = pacs.log.read_text().count("keras-app route: resubmitting")
        log_lines = pacs.log.read_text().count("\n") - lines_before
        node = start_node(design, run, pacs, port, spool, log)
        wait_started(node, log, 2)
        restarted = time.perf_counter()
        keys = [("sr", source_uid(d)) for d in down]
        deadline = restarted + args.wait
        while time.perf_counter() < deadline and not all(k in watch.seen for k in keys):
            time.sleep(0.1)
        answered = [watch.seen[k] for k in keys if k in watch.seen]
    finally:
        node.terminate()
        node.wait(timeout=60)
        watch.halt.set()
        pacs.stop()
    return {
        "design": design,
        "down_s": round(restarted - stopped, 1),  # SIGTERM to ready again
        "sent_while_down": len(down),
        "answered": len(answered),
        "last_answer_after_restart_s": (round(max(answered) - restarted, 2) if answered else None),
        "orthanc_retries_while_down": retries,
        "orthanc_log_lines_while_down": log_lines,
    }


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    designs = ["readme-lua", "jobs-retry", "pull"] if args.design == "all" else [args.design]
    return measure_each(args, designs, measure)


if __name__ == "__main__":
    main()
