"""The pull intake: the node follows Orthanc's change log, so nothing routed is lost.

Orthanc records every stored instance in its change log (`GET /changes?since=N`), in
its database, whether or not the node is running. The node reads it from where it
stopped (`cursor.json` in the spool), fetches each new instance of a routed modality
(`GET /instances/{id}/file`), puts it in the spool, and only then moves its cursor on
and saves it. A crash at any point replays at most the changes after the saved
cursor; the spool knows the instances it holds or has answered, and answers are
stored under UIDs derived from the source, so each image is answered once.

On its first start (no cursor yet) the node begins at the end of the log: it answers
what arrives from then on, not the PACS's history.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence

from keras_app.hospital.pacs import Backoff
from keras_app.hospital.reading import first_line
from keras_app.hospital.results import MANUFACTURER
from keras_app.hospital.spool import Spool, SpoolFull, check_uid, write_durably

log = logging.getLogger("keras_app.dicom_node")

CURSOR = "cursor.json"
# Changes read per request: Orthanc's own default page is 100; a burst of studies is
# read in a few requests, and a request stays well under a second.
PAGE = 100
SERIES_REMEMBERED = 10_000  # series whose routing is known without asking Orthanc again


class ChangesFeed(threading.Thread):
    """Follows an Orthanc's `/changes`, spooling new instances of `modalities`.

    Args:
        session: a `requests.Session` with the credentials and CA (web.http_session).
        url: Orthanc's REST root, e.g. https://pacs.example:8042.
        spool: the node's spool; its cursor.json is the position in the log.
        on_received: called after each spooled instance (wakes the worker).
        modalities: the series modalities routed to the node (the header policy's).
        poll: seconds between looks at the log when it has nothing new.
        backoff: delays after Orthanc could not be reached.
        timeout: seconds for each HTTP request.
    """

    def __init__(
        self,
        session,
        url: str,
        spool: Spool,
        on_received: Callable[[], None],
        *,
        modalities: Sequence[str] = ("CR", "DX"),
        poll: float = 1.0,
        backoff: Backoff | None = None,
        timeout: float = 30.0,
    ):
        super().__init__(name="dicom-node-follow", daemon=True)
        self.session, self.url = session, url.rstrip("/")
        self.spool, self.on_received = spool, on_received
        self.modalities = {m.upper() for m in modalities}
        self.poll, self.timeout = poll, timeout
        self.backoff = backoff or Backoff(1.0, 30.0)
        self.cursor_path = spool.root / CURSOR
        self._halt = threading.Event()
        self._series: dict[str, bool] = {}  # Orthanc series ID -> routed to the node
        self._down = False
        self._saved: int | None = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                more = self.step()
            except SpoolFull as full:
                log.warning("pull paused: %s", full)
                self._halt.wait(self.backoff.next())
                continue
            except Exception as err:  # noqa: BLE001 (Orthanc down, a network error)
                if not self._down:
                    log.warning("cannot read %s/changes: %s; retrying", self.url, first_line(err))
                self._down = True
                self._halt.wait(self.backoff.next())
                continue
            if self._down:
                log.warning("reading %s/changes again", self.url)
                self._down = False
            self.backoff.reset()
            if not more:
                self._halt.wait(self.poll)

    def step(self) -> bool:
        """Reads one page of the log; True when more is waiting.

        Raises:
            SpoolFull: the cursor stays before the change that did not fit.
            requests.RequestException, ValueError: Orthanc not reachable or answering.
        """
        last = self.cursor()
        if last is None:  # first start: from the end of the log
            self.save(int(self._get("/changes", {"last": ""})["Last"]))
            return False
        page = self._get("/changes", {"since": last, "limit": PAGE})
        if int(page["Last"]) < last and not page["Changes"]:
            log.warning(
                "%s's change log ends at %s, before the node's cursor %s (a new Orthanc "
                "database?): following it from its start",
                self.url,
                page["Last"],
                last,
            )
            self.save(0)
            return True
        try:
            for change in page["Changes"]:
                if change.get("ChangeType") == "NewInstance":
                    self._take(change["ID"])
                last = int(change["Seq"])
        finally:
            self.save(last)
        return not page.get("Done", True)

    def _take(self, instance: str) -> None:
        info = self._get(f"/instances/{instance}", none_if_gone=True)
        if info is None or not self._routed(info["ParentSeries"]):
            return
        raw = str(info.get("MainDicomTags", {}).get("SOPInstanceUID", ""))
        try:
            uid = check_uid(raw)
        except ValueError:
            log.warning("refused instance %r (Orthanc %s): not a DICOM UID", raw[:80], instance)
            return
        if self.spool.is_done(uid) or self.spool.incoming(uid).exists():
            return
        answer = self.session.get(f"{self.url}/instances/{instance}/file", timeout=self.timeout)
        if answer.status_code == 404:
            return  # deleted since
        answer.raise_for_status()
        if self.spool.put(uid, lambda f: f.write(answer.content)):
            self.on_received()

    def _routed(self, series: str) -> bool:
        if len(self._series) > SERIES_REMEMBERED:
            self._series.clear()  # a cache, not a record: months of series would add up
        if series not in self._series:
            found = self._get(f"/series/{series}", none_if_gone=True) or {}
            tags = found.get("MainDicomTags", {})
            self._series[series] = (
                str(tags.get("Modality", "")).upper() in self.modalities
                and tags.get("Manufacturer") != MANUFACTURER  # never our own answers
            )
        return self._series[series]

    def _get(self, path: str, params: dict | None = None, *, none_if_gone: bool = False):
        answer = self.session.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        if none_if_gone and answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()

    def cursor(self) -> int | None:
        """The last change already spooled, or None before the first start."""
        try:
            saved = json.loads(self.cursor_path.read_text())
        except FileNotFoundError:
            return None
        if saved.get("url") != self.url:
            log.warning(
                "%s holds the cursor of %s, not %s: following %s from the end of its log",
                self.cursor_path,
                saved.get("url"),
                self.url,
                self.url,
            )
            return None
        return int(saved["last"])

    def save(self, last: int) -> None:
        if last != self._saved:
            data = json.dumps({"url": self.url, "last": last}) + "\n"
            write_durably(self.cursor_path, data.encode())
            self._saved = last
