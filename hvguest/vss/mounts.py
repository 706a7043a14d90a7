"""Mount table and block-device stacking: which filesystems a freeze covers.

Everything here reads text: ``<proc>/self/mountinfo`` of the daemon's mount namespace
and the sysfs tree under ``<sys>``. No ioctl, so unit tests feed fake trees.

A *filesystem* is one superblock, identified by the ``major:minor`` that mountinfo
prints for it; bind mounts and btrfs subvolumes of one filesystem share it and are
frozen once.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hvguest.errors import LocalUsageError

log = logging.getLogger(__name__)

# Kernel-internal and memory filesystems: nothing on a backing disk to make consistent.
PSEUDO_FSTYPES = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "tmpfs",
        "ramfs",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "efivarfs",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "autofs",
        "binfmt_misc",
        "rpc_pipefs",
        "nsfs",
        "selinuxfs",
        "overlay",
        "aufs",
        "squashfs",
        "iso9660",
        "udf",
        "nfsd",
        "rootfs",
        "zonefs",
        "erofs",
        "cramfs",
    }
)
# Filesystems on another machine: their consistency is that machine's business.
NETWORK_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "lustre",
        "gpfs",
        "ocfs2",
        "gfs2",
        "davfs",
        "virtiofs",
        "vboxsf",
        "fuse.sshfs",
    }
)
# Local filesystems whose kernel driver has no freeze support (FIFREEZE -> EOPNOTSUPP).
UNFREEZABLE_FSTYPES = frozenset(
    {"vfat", "msdos", "exfat", "ntfs", "ntfs3", "hfs", "hfsplus", "minix"}
)


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo (proc(5))."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def dev(self) -> str:
        return f"{self.major}:{self.minor}"

    @property
    def read_only(self) -> bool:
        return "ro" in self.super_options

    @property
    def mount_read_only(self) -> bool:
        return "ro" in self.mount_options


def _unescape(text: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \ooo octal."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        octal = text[i + 1 : i + 4]
        if text[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text; a malformed line raises LocalUsageError naming it."""
    mounts: list[Mount] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            major, minor = fields[2].split(":")
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    major=int(major),
                    minor=int(minor),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    mount_options=tuple(fields[5].split(",")),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                    super_options=tuple(fields[sep + 3].split(","))
                    if len(fields) > sep + 3
                    else (),
                )
            )
        except (ValueError, IndexError) as exc:
            raise LocalUsageError(f"mountinfo line {lineno} is malformed: {line!r}") from exc
    return mounts


def read_mountinfo(proc_root: str) -> list[Mount]:
    path = os.path.join(proc_root, "self", "mountinfo")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return parse_mountinfo(f.read())
    except OSError as exc:
        raise LocalUsageError(f"cannot read the mount table {path}: {exc.strerror}") from exc


@dataclass
class Filesystem:
    """One superblock to freeze, reached through ``mount_point``."""

    dev: str
    fstype: str
    source: str
    mount_point: str
    also_mounted_at: list[str] = field(default_factory=list)
    # Devs of filesystems holding the backing files of this one's block device.
    backed_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Skipped:
    mount_point: str
    fstype: str
    reason: str


@dataclass
class FreezePlan:
    """Filesystems in freeze order (thaw in reverse) and the mounts left out, with why."""

    order: list[Filesystem]
    skipped: list[Skipped]

    def mount_points(self) -> list[str]:
        return [fs.mount_point for fs in self.order]


def _matches(patterns: Iterable[str], mount: Mount) -> str | None:
    for pattern in patterns:
        if fnmatch.fnmatchcase(mount.mount_point, pattern) or fnmatch.fnmatchcase(
            mount.fstype, pattern
        ):
            return pattern
    return None


def _skip_reason(mount: Mount) -> str | None:
    fstype = mount.fstype
    base = fstype.split(".", 1)[0]
    if fstype in NETWORK_FSTYPES or base in NETWORK_FSTYPES:
        return f"network filesystem ({fstype})"
    if fstype in PSEUDO_FSTYPES:
        return f"pseudo or memory filesystem ({fstype})"
    if base in ("fuse", "fuseblk"):
        return f"FUSE filesystem ({fstype}): no kernel freeze support"
    if fstype in UNFREEZABLE_FSTYPES:
        return f"{fstype} cannot be frozen"
    if not mount.source.startswith("/dev/"):
        return f"not backed by a block device (source {mount.source})"
    if mount.read_only:
        return "read-only filesystem"
    return None


class SysfsBlock:
    """Block-device stacking from ``<sys>/dev/block``: loop backing files and dm/md slaves."""

    def __init__(self, sys_root: str) -> None:
        self.sys_root = sys_root

    def _dev_dir(self, dev: str) -> str | None:
        path = os.path.join(self.sys_root, "dev", "block", dev)
        if not os.path.exists(path):
            return None
        return os.path.realpath(path)

    def backing_files(self, dev: str) -> list[str]:
        """Files whose filesystems hold this block device's data (loop backing files,
        found through partitions and device-mapper/md slaves, recursively)."""
        start = self._dev_dir(dev)
        if start is None:
            return []
        found: list[str] = []
        seen: set[str] = set()
        todo = [start]
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            # A partition (loop0p1) keeps its loop/ and slaves/ in the parent disk.
            if os.path.exists(os.path.join(node, "partition")):
                todo.append(os.path.dirname(node))
                continue
            backing = os.path.join(node, "loop", "backing_file")
            try:
                with open(backing, encoding="utf-8", errors="surrogateescape") as f:
                    name = f.read().rstrip("\n")
                if name:
                    found.append(name.removesuffix(" (deleted)"))
            except OSError:
                pass
            slaves = os.path.join(node, "slaves")
            try:
                for entry in sorted(os.listdir(slaves)):
                    todo.append(os.path.realpath(os.path.join(slaves, entry)))
            except OSError:
                pass
        return found


def owner_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount whose mount point is the longest prefix of ``path`` (the last one
    mounted wins when several share a mount point: it is the visible one)."""
    best: Mount | None = None
    for mount in mounts:
        mp = mount.mount_point
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = mount
    return best


def build_plan(
    mounts: Sequence[Mount],
    sysfs: SysfsBlock,
    *,
    exclude: Sequence[str] = (),
    include: Sequence[str] = (),
) -> FreezePlan:
    """Choose, deduplicate and order the filesystems to freeze.

    ``exclude`` and ``include`` are globs matched against the mount point and the fs
    type; a non-empty ``include`` is an allow-list. The order is a topological sort:
    a filesystem whose block device stores its data in a file on filesystem X comes
    before X (freezing X first would leave the upper filesystem unable to flush), and
    ``/`` comes last unless that rule forces otherwise.
    """
    skipped: list[Skipped] = []
    by_dev: dict[str, Filesystem] = {}
    rank: dict[str, int] = {}
    # Mounts hidden under a later mount on the same path cannot be opened by path.
    visible: dict[str, Mount] = {}
    for mount in mounts:
        visible[mount.mount_point] = mount
    for mount in mounts:
        if visible[mount.mount_point] is not mount:
            skipped.append(Skipped(mount.mount_point, mount.fstype, "hidden under a later mount"))
            continue
        reason = _skip_reason(mount)
        if reason is None:
            pattern = _matches(exclude, mount)
            if pattern is not None:
                reason = f"excluded by the configuration ({pattern})"
            elif include and _matches(include, mount) is None:
                reason = "not in the configured include list"
        if reason is not None:
            skipped.append(Skipped(mount.mount_point, mount.fstype, reason))
            continue
        existing = by_dev.get(mount.dev)
        if existing is not None:
            # Prefer the mount of the whole filesystem, and "/" over anything.
            if mount.mount_point == "/" or (
                mount.root == "/"
                and existing.mount_point != "/"
                and len(mount.mount_point) < len(existing.mount_point)
            ):
                existing.also_mounted_at.append(existing.mount_point)
                existing.mount_point = mount.mount_point
            else:
                existing.also_mounted_at.append(mount.mount_point)
            continue
        by_dev[mount.dev] = Filesystem(mount.dev, mount.fstype, mount.source, mount.mount_point)
        rank[mount.dev] = len(rank)

    for fs in by_dev.values():
        for backing in sysfs.backing_files(fs.dev):
            owner = owner_of(backing, mounts)
            if owner is not None and owner.dev != fs.dev and owner.dev in by_dev:
                fs.backed_by.append(owner.dev)
    return FreezePlan(_order(by_dev, rank), skipped)


def plan_at(
    proc_root: str, sys_root: str, *, exclude: Sequence[str] = (), include: Sequence[str] = ()
) -> FreezePlan:
    """The freeze plan of the machine whose /proc and /sys are given (the daemon's
    and ``hvguestctl vss plan``'s one way to it)."""
    return build_plan(read_mountinfo(proc_root), SysfsBlock(sys_root),
                      exclude=exclude, include=include)


def _order(by_dev: dict[str, Filesystem], rank: dict[str, int]) -> list[Filesystem]:
    # Kahn's algorithm; among ready filesystems, mount-table order with "/" last.
    waiting_on = {dev: 0 for dev in by_dev}  # how many upper filesystems must go first
    for fs in by_dev.values():
        for lower in set(fs.backed_by):
            waiting_on[lower] += 1

    def key(dev: str) -> tuple[bool, int]:
        return (by_dev[dev].mount_point == "/", rank[dev])

    ready = sorted((d for d, n in waiting_on.items() if n == 0), key=key)
    order: list[Filesystem] = []
    while ready:
        dev = ready.pop(0)
        order.append(by_dev[dev])
        for lower in set(by_dev[dev].backed_by):
            waiting_on[lower] -= 1
            if waiting_on[lower] == 0:
                ready.append(lower)
                ready.sort(key=key)
    if len(order) != len(by_dev):
        # A cycle cannot exist for real devices; fall back to table order, "/" last.
        loop = [by_dev[d].mount_point for d in by_dev if by_dev[d] not in order]
        log.warning("block-device stacking forms a cycle through %s; using mount-table order", loop)
        order += sorted(
            (by_dev[d] for d in by_dev if by_dev[d] not in order), key=lambda f: key(f.dev)
        )
    return order
