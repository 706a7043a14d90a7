"""hvguest-fcopyd: receive files the host sends with Copy-VMFile.

One daemon for both kernel generations: the /dev/vmbus/hv_fcopy character device
(kernels <= 6.9, the kernel speaks VMBus and hands us decoded messages with UTF-8
names) or the raw VMBus ring through uio_hv_generic (kernels >= 6.10, we answer the
IC version negotiation ourselves and names are UTF-16LE). Both feed the same
FcopyService: the protocol role decides, the writer touches files, the state
publisher shows transfers to ``hvguestctl fcopy``.

Where it deliberately differs from the reference daemons (hv_fcopy_daemon and the
upstream UIO daemon):

* files are created 0644 (``fcopy.file_mode``), not 0744, and directories 0755;
* the target must be an absolute path inside ``fcopy.allowed_roots`` with no ``..``,
  no symbolic link and no directory another user owns or can write below the root,
  and names without control characters; anything else is refused with HV_E_FAIL;
* CREATE_PATH creates the whole missing chain, including the last component;
* data goes to a temporary file that gets its final name only on COMPLETE, after
  fsync: CANCEL, a failed WRITE, a restart or a lost channel leave nothing behind;
* a full disk is HV_ERROR_DISK_FULL; a WRITE may land anywhere below ``file_size``
  (resends and gaps are counted and logged), a size beyond the data or beyond
  ``file_size`` is refused, and COMPLETE needs the data to reach ``file_size``;
* a fragment is written before its reply: a failed write is answered with its
  status on that WRITE and on every later WRITE/COMPLETE of the transfer;
  COMPLETE succeeds only once everything is written;
* START during a transfer abandons the old one; WRITE/COMPLETE without START are
  refused; CANCEL works over UIO too; UTF-16 names are decoded strictly;
* on UIO every queued packet is served per interrupt, responses echo the request's
  trans_id, and a packet with bad framing is skipped instead of silencing the channel.

Threads: the main thread runs the event loop and the channel (``WorkerChannel``:
signals, timers, state file, watchdog, back-off and re-opening); after each open a
``DeviceThread`` ("fcopy-device" or "fcopy-ring") blocks in the transport's read and
serves each message; they share the service under ``FcopyDaemon.lock``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from hvguest.config import Config
from hvguest.daemon import Runtime
from hvguest.daemons.channel import run_daemon
from hvguest.daemons.common import daemon_arg_parser, start_daemon
from hvguest.daemons.fcopy_ring import ic_reply
from hvguest.daemons.fcopy_service import FcopyService
from hvguest.daemons.worker_channel import Worker, WorkerChannel
from hvguest.errors import HvGuestError, TransportError
from hvguest.fcopy.settings import FcopySettings
from hvguest.paths import Paths
from hvguest.state import StatePublisher, read_state
from hvguest.transport.chardev import FCOPY_READ_SIZE, CharDevTransport, fcopy_transport
from hvguest.transport.uio import UioTransport, bound_driver, find_device
from hvguest.transport.uio_ring import CorruptPacket
from hvguest.wire.fcopy import fcopy_reply
from hvguest.wire.status import HvStatus

log = logging.getLogger(__name__)

SERVICE = "fcopy"
FCOPY_CLASS_ID = "34d14be3-dee4-41c8-9ae7-6b174977c192"
NOT_OFFERED = (
    "Guest Service Interface not offered: enable it on the host with "
    "Enable-VMIntegrationService -Name 'Guest Service Interface'"
)
PROGRESS_PERIOD = 1.0
_REPLIES = {s.value: fcopy_reply(s) for s in HvStatus}
_FAIL = HvStatus.HV_E_FAIL.value


# -- transport detection -------------------------------------------------------------


def find_fcopy_vmbus_device(paths: Paths) -> str | None:
    """The sysfs directory of the fcopy VMBus device, or None."""
    return find_device(paths, FCOPY_CLASS_ID)


def detect_transport(paths: Paths) -> str | None:
    """ "legacy" (char device), "uio" (raw VMBus device) or None."""
    if os.path.exists(paths.vmbus_device("hv_fcopy")):
        return "legacy"
    device = find_fcopy_vmbus_device(paths)
    if device is None:
        return None
    driver = bound_driver(device)
    # Bound to hv_utils: a kernel <= 6.9 whose /dev/vmbus/hv_fcopy is not there yet.
    return "legacy" if driver == "hv_utils" else "uio"


# -- the daemon ----------------------------------------------------------------------


class FcopyDaemon:
    """The transfer service on its channel (``WorkerChannel``): the channel opens,
    re-opens, logs failures and publishes; this class serves each transport."""

    def __init__(
        self,
        paths: Paths,
        config: Config,
        runtime: Runtime,
        kind: str,
        *,
        device: CharDevTransport | UioTransport | None = None,
    ) -> None:
        self.paths = paths
        self.runtime = runtime
        self.kind = kind
        self.settings: FcopySettings = config.get(FcopySettings)
        self.publisher = StatePublisher(SERVICE, paths)
        self.service = FcopyService(self.settings, self.publisher)
        if device is None:
            device = fcopy_transport(paths) if kind == "legacy" else UioTransport(paths)
        self.device = device
        self.lock = threading.Lock()
        self.stopping = False
        self.channel = WorkerChannel(
            SERVICE, runtime, device, state=self.publisher, remedy="",
            gone=self.device_gone, lock=self.lock, reopening="waiting for device",
            # Not bound yet (hvguest-uio-bind failed or has not run), or a ring that
            # fails at once: say so and wait for it rather than fail the start.
            wait_at_start=kind == "uio",
        )

    # -- start-up --------------------------------------------------------------

    def prepare(self) -> None:
        self._sweep_previous()
        if self.settings.create_roots:
            for root in self.settings.allowed_roots:
                if not os.path.isdir(root):
                    try:
                        os.makedirs(root, mode=self.settings.dir_mode_bits, exist_ok=True)
                        log.info("created allowed root %s", root)
                    except OSError as exc:
                        log.warning("cannot create allowed root %s: %s", root, exc.strerror)

    def _sweep_previous(self) -> None:
        """A previous instance that died mid-transfer may have left a hidden
        temporary file (O_TMPFILE leaves nothing): its path is in the old state."""
        previous = read_state(self.paths, SERVICE)
        details = (previous or {}).get("details") or {}
        in_progress = details.get("in_progress") or {}
        temp = in_progress.get("temp") if isinstance(in_progress, dict) else None
        self.service.sweep_stale(temp)

    def start(self) -> None:
        """Open the channel (legacy: a TransportError when it cannot) and serve."""
        self.channel.start(self)
        self.runtime.on_stop(self.stop)
        self.runtime.call_every(PROGRESS_PERIOD, self.tick)

    def device_gone(self) -> bool:
        """Neither device is there: the host withdrew it (or the driver went)."""
        return find_fcopy_vmbus_device(self.paths) is None and not os.path.exists(
            self.paths.vmbus_device("hv_fcopy")
        )

    # -- the channel's service (WorkerService), called under self.lock ----------

    def registered(self, version: str) -> None:
        """Nothing to do: the worker that serves the device starts next."""

    def worker(self) -> Worker:
        device = self.device
        if isinstance(device, UioTransport):
            return Worker("fcopy-ring", self._ring_server(device))
        buffer = bytearray(FCOPY_READ_SIZE)
        serve = functools.partial(self._serve_legacy, device, buffer, memoryview(buffer))
        return Worker("fcopy-device", serve,
                      on_bug=functools.partial(device.write_packet, _REPLIES[_FAIL]))

    def lost(self, error: TransportError) -> None:
        self.service.abort(f"channel failed: {error}")
        self.publisher.record_error(str(error))

    def details(self) -> dict[str, Any]:
        writer = self.service.writer
        # "kernel" (AF_ALG) or "openssl" once a file was hashed; "off" by configuration
        checksum = writer.digests.engine if writer.checksum else "off"
        return {"transport": self.kind, "checksum": checksum}

    def status_text(self) -> str:
        # Counts only: a file name comes from the host and has no place in sd_notify.
        counts = self.service.counts
        done = f"{counts['ok']} file(s) received, {counts['failed']} failed"
        progress = self.service.progress()
        if progress is None:
            return done
        return f"receiving {progress['bytes_done']} of {progress['file_size']} bytes; {done}"

    # -- legacy char device ------------------------------------------------------
    #
    # One thread owns the device and serves it like the kernel expects: a blocking
    # read() of the next message, the file work, the 4-byte reply. Polling first
    # would cost a round trip per poll on a FUSE-served device and gains nothing:
    # the kernel holds one message at a time and waits for our reply. The thread
    # is a ``DeviceThread`` (hvguest.daemons.worker_channel): only it touches the
    # descriptor, the main thread keeps signals, timers and the watchdog, and
    # ``self.lock`` serialises the service between the two. Here a fragment is
    # hashed before its reply, straight from the buffer: measured with bench fcopy,
    # hashing after the reply (a copy of the fragment, a second pass through the
    # lock) was slower on this device, unlike on the ring.

    def _serve_legacy(
        self, transport: CharDevTransport, buffer: bytearray, view: memoryview
    ) -> None:
        """One message: read into ``buffer`` (reused: a WRITE is written to its file
        straight from there, before the reply, see ``write_now``), answer it."""
        length = transport.read_into(buffer)
        if not length:
            return
        service, lock = self.service, self.lock
        with lock:
            if self.stopping:
                return
            status = service.write_fragment(view, length, defer_hash=False)
            common = status is not None
            if status is None:
                status = service.handle(bytes(view[:length]), utf16=False)
        transport.write_packet(_REPLIES.get(status) or fcopy_reply(status))
        if not common:
            with lock:
                service.after_reply()
                self.channel.backoff.healthy()

    # -- UIO ring (hvguest.transport.uio_ring) -------------------------------------
    #
    # One thread blocks in wait_interrupt() until the host signals, then drain()
    # answers every queued packet straight from the ring; after each reply it
    # re-arms (which also signals the host) and only then hashes the fragment
    # (``after_reply``), while the host prepares the next one. Polling first would
    # add a round trip per packet on a FUSE-served device.

    def _ring_server(self, transport: UioTransport) -> Callable[[], None]:
        first = True

        def serve_one() -> None:
            nonlocal first
            if not first:  # packets queued before we opened raised no interrupt
                transport.wait_interrupt()
            first = False
            with self.lock:
                if not self.stopping:
                    self._drain_uio(transport)

        return serve_one

    def _drain_uio(self, transport: UioTransport) -> None:
        answer = functools.partial(ic_reply, self.service)
        while True:
            try:
                answered = transport.drain(answer, self.service.after_reply)
            except CorruptPacket as exc:
                # Its framing hides where the next packet starts: drop what is
                # queued (the host times out and retries), then serve on.
                self._bad_packet(exc, transport.discard_corrupt())
                continue
            if answered:
                self.channel.backoff.healthy()  # the next failure starts over
            return

    def _bad_packet(self, exc: CorruptPacket, dropped: int) -> None:
        log.error("fcopy: bad packet in the ring (%s); skipped %d queued bytes", exc, dropped)
        self.service.abort(f"bad packet: {exc}")
        self.publisher.record_error(f"bad packet from the host skipped: {exc}")

    # -- periodic and stop ---------------------------------------------------------

    def tick(self) -> None:
        with self.lock:
            self.service.tick()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.service.abort("daemon stopping")
            self.publisher.update(state="stopped", details={"in_progress": None})
            self.publisher.publish()
        # The worker may sit in read(): the channel leaves the descriptor (and the
        # ring mapping) to process exit rather than close something it could use.


def build_parser() -> argparse.ArgumentParser:
    parser = daemon_arg_parser(
        "hvguest-fcopyd", "Receive files sent by the Hyper-V host (Copy-VMFile)."
    )
    parser.add_argument(
        "--transport",
        choices=("auto", "legacy", "uio"),
        default="auto",
        help="/dev/vmbus/hv_fcopy (kernels <= 6.9), the UIO ring (>= 6.10) or detect (default)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths, config = start_daemon(SERVICE, args)
    kind = detect_transport(paths) if args.transport == "auto" else args.transport
    if kind is None:
        log.error("%s", NOT_OFFERED)
        print(f"hvguest-fcopyd: {NOT_OFFERED}", file=sys.stderr, flush=True)
        return 1
    runtime = Runtime("hvguest-fcopyd")
    daemon = FcopyDaemon(paths, config, runtime, kind)
    daemon.prepare()

    def start() -> None:
        try:
            daemon.start()
        except HvGuestError as exc:
            print(f"hvguest-fcopyd: {exc}", file=sys.stderr, flush=True)
            raise

    def ready() -> str:
        roots = ", ".join(daemon.settings.allowed_roots) or "none"
        return f"receiving files over the {kind} transport into {roots}"

    return run_daemon(runtime, start, ready, state=daemon.publisher)


if __name__ == "__main__":
    sys.exit(main())
