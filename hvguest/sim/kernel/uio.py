"""uio_hv_generic + the FCOPY VMBus channel (kernels >= 6.10), host side included.

The two rings live in a file on tmpfs: the daemon maps it through ``/dev/uio0`` (a FUSE
passthrough file) and this model maps it too, so both share real memory. ``/dev/uio0``
itself behaves like the UIO core: a 4-byte read returns the interrupt count once it
differs from what this open file last saw (blocking otherwise); writing int32 1 clears
the RX interrupt mask and signals the host, 0 sets the mask; other lengths -EINVAL.
The first open connects the channel (ring headers reset, RX masked), the last close
disconnects it.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import tempfile
from collections import deque
from collections.abc import Callable

from hvguest.sim.device import POLLIN, POLLRDNORM, WOULD_BLOCK
from hvguest.sim.kernel.ring import Ring, RingError
from hvguest.sim.kernel.timers import Timer, TimerQueue

FCOPY_CLASS = "34d14be3-dee4-41c8-9ae7-6b174977c192"
# The instance the upstream UIO daemon hard-codes.
FCOPY_INSTANCE = "eb765408-105f-49b6-b4aa-c123b64d17d4"
FCOPY_RELID = 13
DEFAULT_RING = 0x5000  # VMBUS_RING_SIZE(0x4000) on current kernels; 0x4000 before 2025
NEW_ID_PATH = "bus/vmbus/drivers/uio_hv_generic/new_id"
_BIND_POLL = 0.05
_READY_POLL = 0.01


class UioDevice:
    """``/dev/uio0`` (implements ``hvguest.sim.device.Device``)."""

    name = "uio0"
    honours_nonblock = True

    def __init__(self, channel: UioFcopy) -> None:
        self._ch = channel
        self._seen: dict[int, int] = {}
        self._waker: Callable[[], None] = lambda: None
        self.rescinded = False
        # uio_hv_generic keeps /dev/uioN openable for a while after a rescind (the
        # node goes only with the device): opens succeed, I/O fails with EIO.
        self.opens_after_rescind = False
        self.open_attempts = 0  # every open() of the node, successful or not

    def set_waker(self, waker: Callable[[], None]) -> None:
        self._waker = waker

    def wake(self) -> None:
        self._waker()

    def open(self, handle: int) -> int:
        self.open_attempts += 1
        if self.rescinded and not self.opens_after_rescind:
            return -errno.ENODEV
        if self.rescinded:
            self._seen[handle] = self._ch.interrupts
            return 0
        if not self._seen:
            self._ch.connect()
        self._seen[handle] = self._ch.interrupts
        return 0

    def read(self, handle: int, size: int) -> bytes | int:
        if size != 4:
            return -errno.EINVAL
        if self.rescinded:
            return -errno.EIO
        count = self._ch.interrupts
        if self._seen.get(handle) == count:
            return WOULD_BLOCK
        self._seen[handle] = count
        return struct.pack("<I", count & 0xFFFFFFFF)

    def write(self, handle: int, data: bytes) -> int:
        if len(data) != 4:
            return -errno.EINVAL
        if self.rescinded:
            return -errno.EIO
        (value,) = struct.unpack("<i", data)
        self._ch.irqcontrol(value != 0)
        return 4

    def poll(self, handle: int) -> int:
        if self.rescinded:
            return POLLIN | POLLRDNORM  # readers then get EIO
        return POLLIN | POLLRDNORM if self._seen.get(handle) != self._ch.interrupts else 0

    def release(self, handle: int) -> None:
        if self._seen.pop(handle, None) is not None and not self._seen:
            self._ch.disconnect()


class UioFcopy:
    """The FCOPY channel bound to uio_hv_generic, and the host's side of its rings."""

    def __init__(self, timers: TimerQueue, *, ring_size: int = DEFAULT_RING,
                 prebound: bool = True, workdir: str | None = None) -> None:
        if ring_size % 4096 or ring_size < 2 * 4096:
            raise ValueError(f"ring size {ring_size:#x} must be page-aligned, >= 0x2000")
        self.timers = timers
        self.ring_size = ring_size
        self.bound = prebound
        base = workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self._dir = tempfile.mkdtemp(prefix="hvguest-sim-ring-", dir=base)
        self.ring_path = os.path.join(self._dir, "ring")
        self._fd = os.open(self.ring_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, 2 * ring_size)
        self._map = mmap.mmap(self._fd, 2 * ring_size)
        view = memoryview(self._map)
        self.tx = Ring(view[:ring_size])  # guest -> host
        self.rx = Ring(view[ring_size:])  # host -> guest
        self.device = UioDevice(self)
        self.interrupts = 0
        self.signals = 0  # guest -> host signals (writes of 1)
        self.connected = False
        self.connects = 0
        self.on_response: Callable[[int, bytes], None] = lambda _t, _p: None
        self.on_connect: Callable[[], None] = lambda: None
        self.on_disconnect: Callable[[], None] = lambda: None
        self._pending: deque[bytes] = deque()  # host packets waiting for RX space
        self.log: list[str] = []
        self.sandbox_root: str | None = None  # for binding on a new_id write
        self._bind_timer: Timer | None = None
        # tx_full: the host stopped reading TX (so it stays full) until the channel
        # is connected again; reading it would "repair" the corruption it plays.
        self._tx_stalled = False
        # Until the guest first unmasks RX after connecting, the host keeps checking
        # the mask and signals once it is cleared: the reference daemon clears it in
        # shared memory without signalling, after the host's first NEGOTIATE went out.
        self._guest_ready = False
        self._ready_timer: Timer | None = None

    # -- channel state ----------------------------------------------------------------
    def connect(self) -> None:
        self._guest_ready = False
        self._tx_stalled = False
        self.tx.reset()
        self.rx.reset()
        self.rx.interrupt_mask = 1
        self.connected = True
        self.connects += 1
        self.log.append("uio0: channel connected")
        self.on_connect()
        self._flush()

    def disconnect(self) -> None:
        self.connected = False
        self.log.append("uio0: channel disconnected")
        self.on_disconnect()

    def rescind(self, *, node_opens: bool = False) -> None:
        """The host withdraws the device: readers get EIO; with ``node_opens`` the
        node still opens (and fails every read and write)."""
        self.device.rescinded = True
        self.device.opens_after_rescind = node_opens
        self.device.wake()

    def remove(self) -> None:
        """The device leaves sysfs (after a rescind): its directory goes away."""
        self.rescind()
        if self.sandbox_root is not None:
            import shutil

            shutil.rmtree(f"{self.sandbox_root}/sys/{self._dev_dir()}", ignore_errors=True)
        self.log.append("uio0: device removed from sysfs")

    def corrupt(self, what: str) -> dict[str, int]:
        """Scribble on a ring header as a broken host would; returns the values set.
        ``rx_read``/``rx_write``: an RX index beyond the data area (the guest is
        interrupted so that it looks); ``tx_full``: TX read index just past the
        write index, so the guest finds no room for its next response, and the host
        stops reading TX until the channel connects again."""
        ring = self.rx if what.startswith("rx_") else self.tx
        beyond = ring.dsize + 8 * 13
        if what == "rx_read":
            ring.read_index = beyond
        elif what == "rx_write":
            ring.write_index = beyond
        elif what == "tx_full":
            ring.read_index = (ring.write_index + 8) % ring.dsize
            self._tx_stalled = True
        else:
            raise ValueError(f"unknown ring corruption {what!r}")
        self.log.append(f"uio0: {what} corrupted: write {ring.write_index},"
                        f" read {ring.read_index}, data {ring.dsize}")
        if what.startswith("rx_"):
            self.interrupt()
        return {"write_index": ring.write_index, "read_index": ring.read_index,
                "dsize": ring.dsize}

    def stats(self) -> dict[str, int | bool]:
        return {"open_attempts": self.device.open_attempts, "connects": self.connects,
                "connected": self.connected, "guest_idle": self.guest_idle()}

    def guest_idle(self) -> bool:
        """The guest has read every interrupt, re-armed, and RX is empty: it can only
        be waiting for the next interrupt, and it will not signal (and so make the
        host read TX) before one. A test that changes the rings behind the guest's
        back waits for this first."""
        try:
            rx_empty = self.rx.available() == 0
        except RingError:  # a corrupted RX: the guest has something to find
            return False
        return (self.connected and not self._pending and rx_empty
                and self.rx.interrupt_mask == 0
                and all(seen == self.interrupts for seen in self.device._seen.values()))

    def irqcontrol(self, enable: bool) -> None:
        self.rx.interrupt_mask = 0 if enable else 1
        if enable:
            self._guest_ready = True
            # No monitor page on this channel: re-enabling signals the host.
            self.signals += 1
            self.on_guest_signal()

    def interrupt(self) -> None:
        """The host signals the guest: the kernel masks RX and wakes UIO readers."""
        self.rx.interrupt_mask = 1
        self.interrupts += 1
        self.device.wake()

    # -- host side ----------------------------------------------------------------------
    def host_send(self, trans_id: int, payload: bytes) -> None:
        from hvguest.wire.vmbus import build_inband_packet

        self.host_send_raw(build_inband_packet(payload, trans_id))

    def host_send_raw(self, packet: bytes) -> None:
        """Put ``packet`` (descriptor + payload, no trailer) on RX as-is."""
        self._pending.append(bytes(packet))
        self._flush()

    def _flush(self) -> None:
        if not self.connected:
            return
        wrote = False
        try:
            while self._pending and self.rx.write_raw(self._pending[0]):
                self._pending.popleft()
                wrote = True
        except RingError as exc:
            self.log.append(f"uio0: RX ring corrupt: {exc}")
            return
        if wrote and self.rx.interrupt_mask == 0:
            self.interrupt()
        elif wrote and not self._guest_ready and self._ready_timer is None:
            self._ready_timer = self.timers.call_later(_READY_POLL / self.timers.scale,
                                                       self._check_ready)

    def _check_ready(self) -> None:
        self._ready_timer = None
        if not self.connected or self._guest_ready:
            return
        if self.rx.interrupt_mask == 0:
            self._guest_ready = True
            if self.rx.available():
                self.interrupt()
            return
        self._ready_timer = self.timers.call_later(_READY_POLL / self.timers.scale,
                                                   self._check_ready)

    def on_guest_signal(self) -> None:
        """Drain TX (the guest's responses), then retry RX writes that did not fit."""
        while not self._tx_stalled:
            try:
                got = self.tx.read_packet()
            except RingError as exc:
                self.log.append(f"uio0: TX ring: {exc}; skipping its contents")
                self.tx.skip_all()
                break
            if got is None:
                break
            ptype, trans_id, payload = got
            if ptype != 6:
                self.log.append(f"uio0: TX packet type {ptype} ignored")
                continue
            self.on_response(trans_id, payload)
        self._flush()

    def host_fileno(self) -> int | None:
        return None  # everything is driven by the guest's signals and the timers

    def on_host_event(self) -> None:
        self.on_guest_signal()

    # -- sysfs ----------------------------------------------------------------------------
    def _dev_dir(self) -> str:
        return f"bus/vmbus/devices/{FCOPY_INSTANCE}"

    def uio_entries(self) -> dict[str, str]:
        size = f"0x{2 * self.ring_size:016x}\n"
        dev = self._dev_dir()
        entries = {}
        for base in (f"{dev}/uio/uio0", "class/uio/uio0"):
            entries[f"{base}/name"] = "uio_hv_generic\n"
            entries[f"{base}/version"] = "0.02.1\n"
            entries[f"{base}/maps/map0/name"] = "txrx_rings\n"
            entries[f"{base}/maps/map0/size"] = size
            entries[f"{base}/maps/map0/addr"] = "0x0000000000000000\n"
            entries[f"{base}/maps/map0/offset"] = "0x0\n"
        return entries

    def fake_sys(self) -> dict[str, object]:
        """The ``SandboxSpec.fake_sys`` tree for this device."""
        from hvguest.sim.sandbox import SysBind, SysDir, SysLink

        dev = self._dev_dir()
        entries: dict[str, object] = {
            f"{dev}/class_id": f"{{{FCOPY_CLASS}}}\n",
            f"{dev}/device_id": f"{{{FCOPY_INSTANCE}}}\n",
            f"{dev}/id": f"{FCOPY_RELID}\n",
            f"{dev}/state": "3\n",
            f"{dev}/vendor": "0x1414\n",
            f"{dev}/device": "0xd\n",
            f"{dev}/modalias": "vmbus:e34bd134e4dec8419ae76b174977c192\n",
            f"{dev}/channel_vp_mapping": f"{FCOPY_RELID}:0\n",
            f"{dev}/channels/{FCOPY_RELID}/ring": SysBind(self.ring_path),
            NEW_ID_PATH: "",
            "bus/vmbus/drivers/uio_hv_generic/remove_id": "",
            "bus/vmbus/drivers/hv_utils": SysDir(),
            # The uio class exists once uio_hv_generic is loaded (also makes /sys/class
            # a writable tmpfs, so a later bind can add uio0).
            "class/uio": SysDir(),
        }
        if self.bound:
            entries.update(self.uio_entries())
            entries[f"{dev}/driver"] = SysLink("../../../../bus/vmbus/drivers/uio_hv_generic")
        return entries

    def start_binding_watch(self, sandbox_root: str) -> None:
        """Unbound mode: bind (create the uio entries) once new_id gets the class
        GUID (hvguest-uio-bind writes it), as the driver core would."""
        self.sandbox_root = sandbox_root
        if not self.bound:
            self._bind_timer = self.timers.call_later(_BIND_POLL / self.timers.scale,
                                                      self._check_new_id)

    def _check_new_id(self) -> None:
        root = self.sandbox_root
        if root is None or self.bound:
            return
        try:
            with open(f"{root}/sys/{NEW_ID_PATH}") as f:
                text = f.read()
        except OSError:
            text = ""
        if FCOPY_CLASS in text.lower():
            try:
                for rel, value in self.uio_entries().items():
                    path = f"{root}/sys/{rel}"
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "w") as f:
                        f.write(value)
                os.symlink("../../../../bus/vmbus/drivers/uio_hv_generic",
                           f"{root}/sys/{self._dev_dir()}/driver")
            except OSError as exc:
                self.log.append(f"uio0: binding failed: {exc}")
            self.bound = True
            self.log.append("uio0: uio_hv_generic bound via new_id")
            return
        self._bind_timer = self.timers.call_later(_BIND_POLL / self.timers.scale,
                                                  self._check_new_id)

    def close(self) -> None:
        for timer in (self._bind_timer, self._ready_timer):
            if timer is not None:
                timer.cancel()
        try:
            self.tx.release()
            self.rx.release()
            self._map.close()
        except (BufferError, ValueError):
            pass
        os.close(self._fd)
        try:
            os.unlink(self.ring_path)
            os.rmdir(self._dir)
        except OSError:
            pass
