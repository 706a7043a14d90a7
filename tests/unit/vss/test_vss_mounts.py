"""Mount table parsing and freeze planning from fake mountinfo and sysfs trees."""

from __future__ import annotations

import os

import pytest

from hvguest.errors import LocalUsageError
from hvguest.vss.mounts import SysfsBlock, build_plan, parse_mountinfo, read_mountinfo

MOUNTINFO = """\
22 1 0:21 / /proc rw,relatime - proc proc rw
23 1 0:22 / /sys rw,relatime - sysfs sysfs rw
24 1 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=1k
27 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
28 27 254:2 / /home rw,relatime - xfs /dev/vda2 rw
29 27 254:3 / /boot/efi rw,relatime - vfat /dev/vda3 rw
30 27 0:40 / /run rw - tmpfs tmpfs rw
31 27 0:41 / /mnt/nfs rw - nfs4 server:/export rw,vers=4.2
32 27 7:0 / /srv/images/disk rw - ext4 /dev/loop0 rw
33 27 254:2 /projects /projects rw - xfs /dev/vda2 rw
34 27 7:1 / /media/cd ro - iso9660 /dev/loop1 ro
35 27 254:4 / /data ro,relatime - ext4 /dev/vda4 ro
36 27 0:50 / /mnt/sshfs rw - fuse.sshfs me@host:/ rw
37 27 0:51 /@home /var/btr rw - btrfs /dev/vdb rw
38 27 0:51 /@snap /var/btr2 rw - btrfs /dev/vdb rw
39 27 254:5 / /mnt/with\\040space rw - ext4 /dev/vda5 rw
"""


def _sysfs(tmp_path, loops=None, slaves=None, partitions=None):
    """A fake <sys>: dev/block/M:m -> devices/.../<name>, loop/backing_file, slaves/."""
    root = tmp_path / "sys"
    block = root / "dev" / "block"
    block.mkdir(parents=True)
    devices = root / "devices" / "virtual" / "block"
    devices.mkdir(parents=True)

    def node(dev, name, parent=None):
        d = (devices / parent / name) if parent else (devices / name)
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(d, block / dev)
        return d

    for dev, (name, backing) in (loops or {}).items():
        d = node(dev, name)
        (d / "loop").mkdir()
        (d / "loop" / "backing_file").write_text(backing + "\n")
    for dev, (name, parent) in (partitions or {}).items():
        d = node(dev, name, parent)
        (d / "partition").write_text("1\n")
    for dev, (name, lower) in (slaves or {}).items():
        d = node(dev, name)
        (d / "slaves").mkdir()
        for low in lower:
            os.symlink(devices / low, d / "slaves" / low)
    return SysfsBlock(str(root))


def test_parse_fields_and_escapes():
    mounts = parse_mountinfo(MOUNTINFO)
    root = mounts[3]
    assert (root.mount_id, root.parent_id, root.dev) == (27, 1, "254:1")
    assert root.mount_point == "/" and root.fstype == "ext4" and root.source == "/dev/vda1"
    assert mounts[-1].mount_point == "/mnt/with space"
    assert mounts[11].read_only and mounts[11].mount_read_only


def test_parse_optional_fields():
    line = "40 27 8:1 / /opt rw shared:1 master:2 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    (m,) = parse_mountinfo(line)
    assert m.fstype == "ext4" and m.source == "/dev/sda1" and m.mount_point == "/opt"


def test_malformed_line_is_named():
    with pytest.raises(LocalUsageError, match="line 2"):
        parse_mountinfo(MOUNTINFO.splitlines()[0] + "\ngarbage here\n")


def test_read_mountinfo_error_names_path(tmp_path):
    with pytest.raises(LocalUsageError, match="cannot read the mount table"):
        read_mountinfo(str(tmp_path))


def test_plan_selection_dedup_and_root_last(tmp_path):
    plan = build_plan(parse_mountinfo(MOUNTINFO), _sysfs(tmp_path))
    assert plan.mount_points() == ["/home", "/srv/images/disk", "/var/btr", "/mnt/with space", "/"]
    home = plan.order[0]
    assert home.also_mounted_at == ["/projects"]  # bind of the same xfs: frozen once
    btr = plan.order[2]
    assert btr.also_mounted_at == ["/var/btr2"]  # btrfs subvolumes: one superblock
    reasons = {s.mount_point: s.reason for s in plan.skipped}
    assert reasons["/proc"].startswith("pseudo")
    assert reasons["/boot/efi"] == "vfat cannot be frozen"
    assert reasons["/mnt/nfs"].startswith("network filesystem")
    assert reasons["/media/cd"].startswith("pseudo") or "read-only" in reasons["/media/cd"]
    assert reasons["/data"] == "read-only filesystem"
    assert reasons["/mnt/sshfs"].startswith("network") or "FUSE" in reasons["/mnt/sshfs"]


def test_exclude_and_include_globs(tmp_path):
    mounts = parse_mountinfo(MOUNTINFO)
    plan = build_plan(mounts, _sysfs(tmp_path), exclude=["/srv/*", "btrfs"])
    assert plan.mount_points() == ["/home", "/mnt/with space", "/"]
    reasons = {s.mount_point: s.reason for s in plan.skipped}
    assert reasons["/srv/images/disk"] == "excluded by the configuration (/srv/*)"
    assert reasons["/var/btr"] == "excluded by the configuration (btrfs)"
    plan = build_plan(mounts, _sysfs(tmp_path / "x"), include=["xfs", "/"])
    assert plan.mount_points() == ["/home", "/"]


def test_loop_on_loop_order(tmp_path):
    """/srv/images/disk is a loop over a file in /home: frozen before /home."""
    sysfs = _sysfs(tmp_path, loops={"7:0": ("loop0", "/home/images/disk.img")})
    plan = build_plan(parse_mountinfo(MOUNTINFO), sysfs)
    order = plan.mount_points()
    assert order.index("/srv/images/disk") < order.index("/home")
    assert order[-1] == "/"


def test_stacking_beats_table_order(tmp_path):
    text = (
        "27 1 254:1 / / rw - ext4 /dev/vda1 rw\n"
        "40 27 254:9 / /lower rw - ext4 /dev/vdc rw\n"
        "41 27 7:3 / /mid rw - ext4 /dev/loop3 rw\n"
        "42 27 7:4 / /top rw - ext4 /dev/loop4 rw\n"
    )
    sysfs = _sysfs(
        tmp_path,
        loops={"7:3": ("loop3", "/lower/mid.img"), "7:4": ("loop4", "/mid/top.img")},
    )
    plan = build_plan(parse_mountinfo(text), sysfs)
    assert plan.mount_points() == ["/top", "/mid", "/lower", "/"]


def test_device_mapper_and_partition_over_loop(tmp_path):
    text = (
        "27 1 254:1 / / rw - ext4 /dev/vda1 rw\n"
        "40 27 254:9 / /lower rw - ext4 /dev/vdc rw\n"
        "41 27 253:0 / /lvm rw - ext4 /dev/mapper/vg-lv rw\n"
        "42 27 259:0 / /part rw - ext4 /dev/loop5p1 rw\n"
    )
    sysfs = _sysfs(
        tmp_path,
        loops={"7:2": ("loop2", "/lower/pv.img"), "7:5": ("loop5", "/lower/parted.img")},
        slaves={"253:0": ("dm-0", ["loop2"])},
        partitions={"259:0": ("loop5p1", "loop5")},
    )
    plan = build_plan(parse_mountinfo(text), sysfs)
    order = plan.mount_points()
    assert order.index("/lvm") < order.index("/lower")
    assert order.index("/part") < order.index("/lower")
    assert order[-1] == "/"


def test_root_on_loop_over_lower_goes_first(tmp_path):
    """A live system whose / is a loop over a file on another filesystem: the
    stacking rule wins over "/ last"."""
    text = "27 1 7:0 / / rw - ext4 /dev/loop0 rw\n40 27 8:1 / /run/medium rw - ext4 /dev/sda1 rw\n"
    sysfs = _sysfs(tmp_path, loops={"7:0": ("loop0", "/run/medium/root.img")})
    plan = build_plan(parse_mountinfo(text), sysfs)
    assert plan.mount_points() == ["/", "/run/medium"]


def test_hidden_mount_is_skipped(tmp_path):
    text = (
        "27 1 254:1 / / rw - ext4 /dev/vda1 rw\n"
        "40 27 254:2 / /mnt rw - ext4 /dev/vdb rw\n"
        "41 27 254:3 / /mnt rw - ext4 /dev/vdc rw\n"
    )
    plan = build_plan(parse_mountinfo(text), _sysfs(tmp_path))
    assert [fs.source for fs in plan.order] == ["/dev/vdc", "/dev/vda1"]
    assert plan.skipped[0].reason == "hidden under a later mount"
