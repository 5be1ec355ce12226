"""The DICOM node (keras_app.dicom_node): its intakes, its spool and its worker, together.

Images come in by C-STORE (`scp.StorageScp`, the PACS pushes), by following an
Orthanc's change log (`follow.ChangesFeed`, the node pulls: nothing routed is lost
while the node is down), or both. Either way each image is in the spool before it
counts as received; the worker (`worker.Worker`) answers what the spool holds and
stores the answers in the PACS (`pacs.CStoreSender` or `web.StowSender`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence

import pydicom

from keras_app.decision.header_policy import HeaderPolicy
from keras_app.hospital.answers import Analyser
from keras_app.hospital.follow import ChangesFeed
from keras_app.hospital.pacs import Backoff, Caller
from keras_app.hospital.reading import DEFAULT_POLICY
from keras_app.hospital.scp import StorageScp
from keras_app.hospital.spool import Spool
from keras_app.hospital.worker import BATCH, Worker


class DicomNode:
    """The node: `start()` opens its intakes and starts answering, `stop()` ends all.

    Args:
        spool: where received instances wait for their answer.
        analyser: predicts and builds answers.
        store: stores answers in the PACS (`CStoreSender` or `StowSender`).
        ae_title, host, port: what the Storage SCP listens as (`listen=False`: no SCP).
        allow: callers the SCP accepts (required when it listens).
        max_associations: associations the SCP accepts at once.
        tls: a server TLS context for the SCP; None: plain DIMSE.
        follow: `(session, url)` of an Orthanc whose change log the node pulls from.
        policy: what the model reads.
        backoff: retry delays for the worker.
        batch: the most images the worker answers at once.
        on_record: called once per answered image with its usage record.
    """

    def __init__(
        self,
        spool: Spool,
        analyser: Analyser,
        store: Callable[[Sequence[pydicom.Dataset]], None],
        *,
        ae_title: str = "KERASAPP",
        host: str = "127.0.0.1",
        port: int = 11112,
        allow: Sequence[Caller] = (),
        max_associations: int = 8,
        tls: ssl.SSLContext | None = None,
        listen: bool = True,
        follow: tuple | None = None,
        policy: HeaderPolicy = DEFAULT_POLICY,
        backoff: Backoff | None = None,
        batch: int = BATCH,
        on_record: Callable[[dict], None] | None = None,
    ):
        self.spool = spool
        self.worker = Worker(
            spool, analyser, store, policy=policy, backoff=backoff, batch=batch, on_record=on_record
        )
        self.scp = None
        if listen:
            self.scp = StorageScp(
                spool,
                self.worker.wake,
                ae_title=ae_title,
                host=host,
                port=port,
                allow=allow,
                max_associations=max_associations,
                tls=tls,
            )
        self.feed = None
        if follow is not None:
            session, url = follow
            self.feed = ChangesFeed(
                session, url, spool, self.worker.wake, modalities=policy.modalities
            )

    def start(self) -> DicomNode:
        """Opens the intakes; what the spool holds from before is answered at once.

        Raises:
            OSError: the SCP cannot listen on its port.
        """
        if self.scp is not None:
            self.scp.start()
        self.worker.start()
        self.worker.wake()
        if self.feed is not None:
            self.feed.start()
        return self

    def stop(self) -> None:
        """Stops taking and answering; what is still pending stays in the spool."""
        if self.scp is not None:
            self.scp.stop()
        if self.feed is not None:
            self.feed.stop()
            self.feed.join(timeout=60)
        self.worker.stop()
        self.worker.join(timeout=60)

    def __enter__(self) -> DicomNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
