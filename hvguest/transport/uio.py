"""The fcopy channel through uio_hv_generic (kernels >= 6.10), protocol.md §5.

The kernel no longer speaks fcopy; the device is bound to uio_hv_generic before the
daemon starts (by ``hvguest-uio-bind``, see ``hvguest.transport.uio_bind``: loading a
module and writing driver attributes need privileges the daemon does not keep), and
the daemon maps its two rings (TX guest->host first, RX host->guest second) and exchange raw VMBus
packets. /dev/uioN semantics: read(4) returns the interrupt count (after the
host's interrupt the kernel masks further RX interrupts), write(int32 1)
unmasks them and signals the host, EIO means the host rescinded the device.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable
from typing import Self

from hvguest.errors import TransportError
from hvguest.paths import Paths
from hvguest.transport.base import Opens
from hvguest.transport.ring import RingBuffer
from hvguest.transport.uio_ring import PacketHandler, RingChannel

log = logging.getLogger(__name__)

FCOPY_CLASS_ID = "34d14be3-dee4-41c8-9ae7-6b174977c192"
UIO_DRIVER = "uio_hv_generic"
BIND_TIMEOUT = 5.0
_POLL_STEP = 0.05
_INT32 = struct.Struct("<i")
_ONE = _INT32.pack(1)


def normalize_guid(text: str) -> str:
    return text.strip().strip("{}").lower()


class DeviceNotBound(TransportError):
    """The VMBus device exists but no driver serves it: ``hvguest-uio-bind`` has not
    run (or failed). Waiting helps once it runs; binding is not the daemon's job."""


def find_device(paths: Paths, class_id: str = FCOPY_CLASS_ID) -> str | None:
    """The sysfs directory of the VMBus device whose class_id matches, or None."""
    root = paths.vmbus_devices
    wanted = normalize_guid(class_id)
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(root, entry, "class_id"), encoding="ascii") as f:
                found = normalize_guid(f.read())
        except (OSError, UnicodeDecodeError):
            continue
        if found == wanted:
            return os.path.join(root, entry)
    return None


def bound_driver(device_dir: str) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(device_dir, "driver")))
    except OSError:
        return None


def uio_bound(device_dir: str) -> bool:
    """True when uio_hv_generic serves ``device_dir``, False when nothing does; a
    TransportError when another driver (hv_utils) has it: that kernel serves fcopy
    through the character device."""
    driver = bound_driver(device_dir)
    if driver is not None and driver != UIO_DRIVER:
        raise TransportError(
            f"{device_dir} is bound to {driver}, not {UIO_DRIVER}: this kernel serves"
            " fcopy itself (use /dev/vmbus/hv_fcopy)"
        )
    return driver == UIO_DRIVER


class UioTransport(Opens):
    """The VMBus device of ``class_id`` served through /dev/uioN."""

    # The IC framework and service versions are negotiated in the ring's own
    # messages (wire.icmsg), not when the device opens.
    version: str | None = None

    def __init__(
        self,
        paths: Paths,
        class_id: str = FCOPY_CLASS_ID,
        *,
        bind_timeout: float = BIND_TIMEOUT,
    ) -> None:
        self.paths = paths
        self.class_id = normalize_guid(class_id)
        self.bind_timeout = bind_timeout
        self.device_dir: str | None = None
        self.uio_name: str | None = None
        self.ring_size = 0  # per direction
        self.tx: RingBuffer | None = None
        self.rx: RingBuffer | None = None
        self.channel: RingChannel | None = None
        self.interrupts = 0
        self._fd: int | None = None
        self._map: mmap.mmap | None = None

    # -- discovery ---------------------------------------------------------------

    def find_device(self) -> str:
        """The sysfs directory of the device whose class_id matches."""
        found = find_device(self.paths, self.class_id)
        if found is None:
            raise TransportError(
                f"no VMBus device of class {self.class_id} under {self.paths.vmbus_devices}:"
                " the host does not offer the Guest Service Interface (enable it in the"
                " VM's integration services)"
            )
        return found

    def check_bound(self, device_dir: str) -> None:
        if uio_bound(device_dir):
            return
        raise DeviceNotBound(
            f"{device_dir} is not bound to {UIO_DRIVER}; hvguest-uio-bind binds it (run"
            " as root before the daemon by hvguest-fcopy.service: see its journal)"
        )

    def _uio_name(self, device_dir: str) -> str | None:
        try:
            names = sorted(
                n for n in os.listdir(os.path.join(device_dir, "uio")) if n.startswith("uio")
            )
        except OSError:
            return None
        return names[0] if names else None

    def wait_uio(self, device_dir: str) -> str:
        """The uioN name, waiting (bounded) for sysfs to show it and its ring
        size: the entries appear asynchronously after binding."""
        deadline = time.monotonic() + self.bind_timeout
        while True:
            name = self._uio_name(device_dir)
            if name is not None and self._size_known(device_dir, name):
                return name
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"{device_dir}: no uio device with a ring map appeared within"
                    f" {self.bind_timeout:g} s of binding {UIO_DRIVER}"
                )
            time.sleep(_POLL_STEP)

    def _size_known(self, device_dir: str, uio: str) -> bool:
        if os.path.exists(os.path.join(device_dir, "uio", uio, "maps", "map0", "size")):
            return True
        try:
            return self._channel_ring_size(device_dir) > 0
        except TransportError:
            return False

    def read_ring_size(self, device_dir: str, uio: str) -> int:
        """Per-direction ring size: half of map 0 (both rings), §5.1."""
        map_size = os.path.join(device_dir, "uio", uio, "maps", "map0", "size")
        try:
            with open(map_size, encoding="ascii") as f:
                total = int(f.read().strip(), 16)
        except FileNotFoundError:
            total = self._channel_ring_size(device_dir)
        except (OSError, ValueError) as exc:
            raise TransportError(f"{map_size}: unreadable ring size: {exc}") from exc
        per_direction = total // 2
        if total % 2 or per_direction <= 4096 or per_direction % 4096:
            raise TransportError(
                f"{device_dir}: ring map is {total:#x} bytes; expected two page-aligned rings"
            )
        return per_direction

    def _channel_ring_size(self, device_dir: str) -> int:
        channels = os.path.join(device_dir, "channels")
        try:
            for relid in sorted(os.listdir(channels)):
                ring = os.path.join(channels, relid, "ring")
                if os.path.exists(ring):
                    return os.stat(ring).st_size
        except OSError:
            pass
        raise TransportError(f"{device_dir}: neither uio map0 size nor a channel ring file")

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> Self:
        device_dir = self.find_device()
        self.check_bound(device_dir)
        uio = self.wait_uio(device_dir)
        size = self.read_ring_size(device_dir, uio)
        node = os.path.join(self.paths.dev, uio)
        fd = self._open_node(node)
        try:
            mapping = self._map_rings(fd, 2 * size)
        except BaseException:
            os.close(fd)
            raise
        self.device_dir = device_dir
        self._fd, self._map = fd, mapping
        self.attach(mapping, size, uio)
        log.info("%s: %s, rings 2 x %#x bytes", device_dir, node, size)
        return self

    def attach(self, mem: mmap.mmap | bytearray, size: int, uio: str) -> None:
        """Serve the two rings in ``mem`` (TX first, then RX, ``size`` bytes each):
        the mapping of /dev/``uio``, or memory in tests."""
        self.uio_name, self.ring_size = uio, size
        view = memoryview(mem)
        self.tx = RingBuffer(view[:size], size, name=f"{uio} TX")
        self.rx = RingBuffer(view[size:], size, name=f"{uio} RX")
        view.release()
        self.channel = RingChannel(self.tx, self.rx, self._unmask)
        # The first open masks RX interrupts; unmask without signalling, as the
        # C daemon does. Packets already queued are picked up by the first drain.
        self.rx.interrupt_mask = 0

    def _open_node(self, node: str) -> int:
        try:
            return os.open(node, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise TransportError(f"{node}: device node absent (is udev running?)") from exc
        except OSError as exc:
            raise TransportError(f"{node}: cannot open: {exc.strerror}") from exc

    def _map_rings(self, fd: int, length: int) -> mmap.mmap:
        try:
            return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot map {length:#x} bytes of rings: {exc}") from exc

    def close(self) -> None:
        for ring in (self.tx, self.rx):
            if ring is not None:
                ring.release()
        self.tx = self.rx = None
        self.channel = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def reopen(self) -> None:
        self.close()
        self.open()

    @property
    def path(self) -> str:
        """What the state file and the logs name: the node and its VMBus device once
        found, the class searched for before."""
        if self.uio_name is None or self.device_dir is None:
            return f"{self.paths.vmbus_devices} (class {self.class_id})"
        return f"/dev/{self.uio_name} ({self.device_dir})"

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int:
        if self._fd is None:
            raise TransportError("UIO transport is not open")
        return self._fd

    # -- packets ----------------------------------------------------------------

    def _rings(self) -> tuple[RingBuffer, RingBuffer]:
        if self.tx is None or self.rx is None:
            raise TransportError("UIO transport is not open")
        return self.tx, self.rx

    def _channel(self) -> RingChannel:
        if self.channel is None:
            raise TransportError("UIO transport is not open")
        return self.channel

    def wait_interrupt(self) -> None:
        """Block until the host signals (read(4) of the interrupt count)."""
        self._read_interrupt(self.fileno())

    def drain(self, handler: PacketHandler, after_reply: Callable[[], None] | None = None) -> int:
        """Answer every queued packet and re-arm (``RingChannel.drain``)."""
        return self._channel().drain(handler, after_reply)

    def discard_corrupt(self) -> int:
        """Drop what RX holds after a ``CorruptPacket`` (``RingChannel.discard_corrupt``)."""
        return self._channel().discard_corrupt()

    def _read_interrupt(self, fd: int) -> None:
        try:
            data = os.read(fd, 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise self._device_error("read", exc) from exc
        if len(data) == 4:
            self.interrupts = _INT32.unpack(data)[0] & 0xFFFFFFFF

    def _device_error(self, what: str, exc: OSError) -> TransportError:
        if exc.errno == errno.EIO:
            return TransportError(f"/dev/{self.uio_name}: device rescinded by the host")
        return TransportError(f"/dev/{self.uio_name}: {what} failed: {exc.strerror}")

    def _unmask(self) -> None:
        """write(int32 1): unmask RX interrupts and signal the host."""
        try:
            n = os.write(self.fileno(), _ONE)
        except OSError as exc:
            raise self._device_error("write", exc) from exc
        if n != 4:
            raise TransportError(f"/dev/{self.uio_name}: short write of the interrupt control")
