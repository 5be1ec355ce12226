"""The DICOM node's Storage SCP: who may send, how many at once, and what reaches the spool.

An association is rejected, with the reason DICOM has for it and one log line, when
its calling AE title (and host) is not allowed (`Caller`), or when `max_associations`
are open already. A C-STORE is acknowledged only once its instance is in the spool; it
is refused when its SOP Instance UID is not a UID (it would become a file name) or the
spool is full (out of resources: the sender keeps the instance and retries).

Every storage SOP class is accepted, so a PACS routing a whole study is never refused;
the worker answers images and skips the rest.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence

from keras_app.hospital.pacs import Caller
from keras_app.hospital.reading import first_line
from keras_app.hospital.spool import Spool, SpoolFull, check_uid

log = logging.getLogger("keras_app.dicom_node")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # refused for now: the sender keeps the instance and retries
CANNOT_UNDERSTAND = 0xC000  # an error: retrying the same instance would not help
# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)  # rejected-permanent, service-user
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # rejected-transient, service-provider (presentation)


class StorageScp:
    """Receives images by C-STORE into the spool.

    Args:
        spool: where received instances wait for their answer.
        on_received: called after each instance is spooled (wakes the worker).
        ae_title, host, port: what the node listens as.
        allow: the callers that may associate; nobody else can.
        max_associations: associations open at once; more are rejected as
            local-limit-exceeded (the sender retries later).
        tls: a server TLS context (`pacs.Tls.server_context()`); None: plain DIMSE.
    """

    def __init__(
        self,
        spool: Spool,
        on_received: Callable[[], None],
        *,
        ae_title: str,
        host: str,
        port: int,
        allow: Sequence[Caller],
        max_associations: int = 8,
        tls: ssl.SSLContext | None = None,
    ):
        if not allow:
            raise ValueError("allow must name at least one caller (AE title, optionally @host)")
        if max_associations < 1:
            raise ValueError(f"max_associations must be >= 1. Received {max_associations}")
        self.spool, self.on_received = spool, on_received
        self.ae_title, self.host, self.port = ae_title, host, port
        self.allow, self.max_associations, self.tls = tuple(allow), max_associations, tls
        self._server = None

    def start(self) -> StorageScp:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True  # answer only associations addressed to this node
        ae.maximum_associations = self.max_associations  # pynetdicom's own check, a backstop
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (self.host, self.port),
            block=False,
            ssl_context=self.tls,
            evt_handlers=[
                (evt.EVT_REQUESTED, self._on_requested),
                (evt.EVT_C_STORE, self._on_store),
            ],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_requested(self, event) -> None:
        """Rejects a caller that is not allowed, or one too many, before negotiation."""
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = str(assoc.requestor.address)
        if not any(caller.allows(calling, address) for caller in self.allow):
            log.warning(
                "refused association from %s@%s: calling AE title not allowed (allowed: %s)",
                calling,
                address,
                ", ".join(map(str, self.allow)),
            )
            self._reject(assoc, CALLING_AE_NOT_RECOGNISED)
            return
        open_now = sum(1 for a in assoc.ae.active_associations if a.is_acceptor)
        if open_now > self.max_associations:
            log.warning(
                "refused association from %s@%s: %d associations open, the limit is %d "
                "(--max-associations); the sender retries",
                calling,
                address,
                open_now - 1,
                self.max_associations,
            )
            self._reject(assoc, LOCAL_LIMIT_EXCEEDED)

    @staticmethod
    def _reject(assoc, reason: tuple[int, int, int]) -> None:
        assoc.acse.send_reject(*reason)
        assoc.kill()

    def _on_store(self, event) -> int:
        raw = str(event.request.AffectedSOPInstanceUID)
        caller = f"{str(event.assoc.requestor.ae_title).strip()}@{event.assoc.requestor.address}"
        try:
            uid = check_uid(raw)
        except ValueError:
            log.warning("refused instance %r from %s: not a DICOM UID", raw[:80], caller)
            return CANNOT_UNDERSTAND
        try:
            self.spool.put(uid, lambda f: f.write(event.encoded_dataset(include_meta=True)))
        except SpoolFull as full:
            log.warning("refused instance %s from %s: %s", uid, caller, full)
            return OUT_OF_RESOURCES
        except OSError as err:
            log.error(
                "refused instance %s from %s: cannot spool it (%s)", uid, caller, first_line(err)
            )
            return OUT_OF_RESOURCES
        self.on_received()
        return SUCCESS
