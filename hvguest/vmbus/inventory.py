"""VMBus device inventory from sysfs: what the host offers and who drives it.

Reads ``<sys>/bus/vmbus/devices/<instance>/`` (class_id, id, state,
channel_vp_mapping, the driver symlink, uio/ and channels/<relid>/ counters).
Nothing here needs root except some ring counters; attributes that cannot be
read are listed in ``unreadable`` rather than failing the scan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hvguest.paths import Paths


@dataclass(frozen=True)
class DeviceClass:
    guid: str
    name: str  # short, stable key used in JSON
    description: str  # what lsvmbus prints
    drivers: tuple[str, ...] = ()


# The full class table (include/linux/hyperv.h, channel_mgmt.c, tools/hv/lsvmbus): class
# id, key, the drivers that bind it ("-": none in Linux), what lsvmbus prints. imc is not
# in lsvmbus's table (it prints "Unknown" for it).
_CLASS_TABLE = """
32412632-86cb-44a2-9b5c-50d1417354f5 ide       hv_storvsc       Synthetic IDE Controller
ba6163d9-04a1-4d29-b605-72e2ffb1dc7f scsi      hv_storvsc       Synthetic SCSI Controller
2f9bcc4a-0069-4af3-b76b-6fd0be528cda fc        hv_storvsc       Synthetic fiber channel adapter
f8615163-df3e-46c5-913f-f2d2f965ed0e netvsc    hv_netvsc        Synthetic network adapter
8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501 nd        -                Synthetic RDMA adapter
44c4f61d-4444-4400-9d52-802e27ede19f pcie      hv_pci           PCI Express pass-through
da0a7802-e377-4aac-8e77-0558eb1073f8 synthvid  hyperv_drm,hyperv_fb Synthetic framebuffer adapter
f912ad6d-2b17-48ea-bd65-f927a61c7684 keyboard  hyperv_keyboard  Synthetic keyboard
cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a mouse     hid_hyperv       Synthetic mouse
a9a0f4e7-5a45-4d96-b827-8a841e8c03e6 kvp       hv_utils         [Data Exchange]
9527e630-d0ae-497b-adce-e80ab0175caf timesync  hv_utils         [Time Synchronization]
57164f39-9115-4e78-ab55-382f3bd5422d heartbeat hv_utils         [Heartbeat]
0e0b6031-5213-4934-818b-38d90ced39db shutdown  hv_utils         [Operating system shutdown]
34d14be3-dee4-41c8-9ae7-6b174977c192 fcopy     hv_utils,uio_hv_generic [Guest services]
35fa2e29-ea23-4236-96ae-3a6ebacba440 vss       hv_utils         [Backup (volume checkpoint)]
525074dc-8985-46e2-8057-a307dc18a502 balloon   hv_balloon       [Dynamic Memory]
f8e65716-3cb3-4a06-9a60-1889c5cccab5 avma1     -                [Reserved system device]
3375baf4-9e15-4b30-b765-67acb10d607b avma2     -                [Reserved system device]
276aacf4-ac15-426c-98dd-7521ad3f01fe rdv       -                [Reserved system device]
c376c1c3-d276-48d2-90a9-c04748072c60 imc       -                Initial Machine Configuration
"""


def _classes(table: str) -> dict[str, DeviceClass]:
    out = {}
    for line in table.strip().splitlines():
        guid, name, drivers, description = line.split(None, 3)
        out[guid] = DeviceClass(guid, name, description,
                                () if drivers == "-" else tuple(drivers.split(",")))
    return out


CLASSES: dict[str, DeviceClass] = _classes(_CLASS_TABLE)

# The integration services hvguest reports on, by service key.
SERVICE_CLASS = {
    c.name: c.guid
    for c in CLASSES.values()
    if c.name in ("heartbeat", "shutdown", "timesync", "kvp", "vss", "fcopy")
}

CHANNEL_COUNTERS = (
    "cpu", "in_mask", "out_mask", "read_avail", "write_avail", "interrupts", "events",
    "intr_in_full", "intr_out_empty", "out_full_first", "out_full_total", "subchannel_id",
    "pending", "latency", "monitor_id",
)


@dataclass(frozen=True)
class Channel:
    relid: int
    counters: dict[str, int]

    @property
    def cpu(self) -> int | None:
        return self.counters.get("cpu")

    def as_dict(self) -> dict[str, Any]:
        return {"relid": self.relid, **self.counters}


@dataclass(frozen=True)
class VmbusDevice:
    instance: str
    class_id: str  # lower case, no braces; "" when unreadable
    vmbus_id: int | None
    state: int | None
    driver: str | None
    channels: tuple[Channel, ...]
    uio: str | None = None  # "uio0" while bound to uio_hv_generic
    uio_map_size: int | None = None
    path: str = ""

    @property
    def cls(self) -> DeviceClass | None:
        return CLASSES.get(self.class_id)

    @property
    def name(self) -> str:
        c = self.cls
        return c.name if c else "unknown"

    @property
    def description(self) -> str:
        c = self.cls
        return c.description if c else "Unknown"

    @property
    def primary(self) -> Channel | None:
        """The primary channel (relid == id), else the lowest relid."""
        for ch in self.channels:
            if ch.relid == self.vmbus_id:
                return ch
        return self.channels[0] if self.channels else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "class_id": self.class_id,
            "class": self.name,
            "description": self.description,
            "vmbus_id": self.vmbus_id,
            "state": self.state,
            "driver": self.driver,
            "uio": self.uio,
            "uio_map_size": self.uio_map_size,
            "channels": [c.as_dict() for c in self.channels],
            "sysfs_path": self.path,
        }


@dataclass
class Inventory:
    root: str
    present: bool  # False: no <sys>/bus/vmbus, not a Hyper-V guest (or no vmbus driver)
    devices: list[VmbusDevice] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def by_class(self, guid: str) -> list[VmbusDevice]:
        return [d for d in self.devices if d.class_id == guid]

    def service_device(self, service: str) -> VmbusDevice | None:
        """The device of an integration service ("kvp", "vss", ...), or None."""
        found = self.by_class(SERVICE_CLASS[service])
        return found[0] if found else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "devices": [d.as_dict() for d in self.devices],
            "unreadable": list(self.unreadable),
        }


def normalise_guid(text: str) -> str:
    return text.strip().strip("{}").lower()


def _read(path: str, unreadable: list[str]) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:  # EACCES, or EINVAL for an unallocated ring
        unreadable.append(f"{path}: {exc.strerror or exc}")
        return None


def _int(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def _read_channels(dev_dir: str, unreadable: list[str]) -> tuple[Channel, ...]:
    chan_dir = os.path.join(dev_dir, "channels")
    channels: list[Channel] = []
    try:
        names = os.listdir(chan_dir)
    except FileNotFoundError:
        names = []
    except OSError as exc:
        unreadable.append(f"{chan_dir}: {exc.strerror or exc}")
        names = []
    for name in names:
        relid = _int(name)
        if relid is None:
            continue
        counters: dict[str, int] = {}
        for attr in CHANNEL_COUNTERS:
            value = _int(_read(os.path.join(chan_dir, name, attr), unreadable))
            if value is not None:
                counters[attr] = value
        channels.append(Channel(relid, counters))
    if not channels:
        # Older kernels have no channels/ directory; channel_vp_mapping has relid:cpu.
        mapping = _read(os.path.join(dev_dir, "channel_vp_mapping"), unreadable) or ""
        for line in mapping.splitlines():
            rel, _, cpu = line.partition(":")
            r, c = _int(rel.strip()), _int(cpu.strip())
            if r is not None:
                channels.append(Channel(r, {"cpu": c} if c is not None else {}))
    return tuple(sorted(channels, key=lambda c: c.relid))


def _driver(dev_dir: str) -> str | None:
    try:
        target = os.readlink(os.path.join(dev_dir, "driver"))
    except OSError:
        return None
    return os.path.basename(target.rstrip("/")) or None


def _uio(dev_dir: str, unreadable: list[str]) -> tuple[str | None, int | None]:
    uio_dir = os.path.join(dev_dir, "uio")
    try:
        names = sorted(n for n in os.listdir(uio_dir) if n.startswith("uio"))
    except OSError:
        return None, None
    if not names:
        return None, None
    size = _int(_read(os.path.join(uio_dir, names[0], "maps", "map0", "size"), unreadable))
    return names[0], size


def read_device(dev_dir: str, unreadable: list[str]) -> VmbusDevice:
    instance = os.path.basename(dev_dir.rstrip("/"))
    class_id = normalise_guid(_read(os.path.join(dev_dir, "class_id"), unreadable) or "")
    uio, size = _uio(dev_dir, unreadable)
    return VmbusDevice(
        instance=instance,
        class_id=class_id,
        vmbus_id=_int(_read(os.path.join(dev_dir, "id"), unreadable)),
        state=_int(_read(os.path.join(dev_dir, "state"), unreadable)),
        driver=_driver(dev_dir),
        channels=_read_channels(dev_dir, unreadable),
        uio=uio,
        uio_map_size=size,
        path=dev_dir,
    )


def scan(paths: Paths) -> Inventory:
    """Every VMBus device, sorted by VMBus id (as lsvmbus sorts them)."""
    root = paths.vmbus_devices
    inv = Inventory(root=root, present=os.path.isdir(root))
    if not inv.present:
        return inv
    try:
        names = os.listdir(root)
    except OSError as exc:
        inv.unreadable.append(f"{root}: {exc.strerror or exc}")
        return inv
    for name in names:
        inv.devices.append(read_device(os.path.join(root, name), inv.unreadable))
    inv.devices.sort(key=lambda d: (d.vmbus_id if d.vmbus_id is not None else 1 << 30, d.instance))
    return inv
