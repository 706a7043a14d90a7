"""lsvmbus on fixture sysfs trees: the kernel's tools/hv/lsvmbus output, character for
character (tests/system/test_lsvmbus_reference.py runs the original beside it)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

from hvguest.cli.lsvmbus import main
from hvguest.paths import Paths

KVP = "242ff919-07db-4180-9c2e-b86cb68c8c55"


def lsvmbus(paths: Paths, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = main([*args, "--sys-root", paths.sys], out=out)
    return rc, out.getvalue()


def only_kvp_and_heartbeat(machine: Callable[..., Paths]) -> Paths:
    return machine(gen=2, omit=("balloon", "keyboard", "mouse", "synthvid", "timesync",
                                "shutdown", "vss", "fcopy", "scsi", "netvsc"))


def test_plain_lists_descriptions_by_vmbus_id(machine: Callable[..., Paths]) -> None:
    rc, text = lsvmbus(only_kvp_and_heartbeat(machine))
    assert rc == 0
    assert text == "VMBUS ID  9: [Heartbeat]\nVMBUS ID 11: [Data Exchange]\n"


def test_verbose_class_ids_and_channel_map(machine: Callable[..., Paths]) -> None:
    _, text = lsvmbus(only_kvp_and_heartbeat(machine), "-v")
    assert text == (
        "VMBUS ID  9: Class_ID = {57164f39-9115-4e78-ab55-382f3bd5422d} - [Heartbeat]\n"
        "\tRel_ID=9, target_cpu=0\n\n"
        "VMBUS ID 11: Class_ID = {a9a0f4e7-5a45-4d96-b827-8a841e8c03e6} - [Data Exchange]\n"
        "\tRel_ID=11, target_cpu=0\n\n"
    )


def test_very_verbose_device_id_and_sysfs_path(machine: Callable[..., Paths]) -> None:
    paths = only_kvp_and_heartbeat(machine)
    _, text = lsvmbus(paths, "-vv")
    kvp_block = text.split("\n\n")[1]
    assert kvp_block == (
        "VMBUS ID 11: Class_ID = {a9a0f4e7-5a45-4d96-b827-8a841e8c03e6} - [Data Exchange]\n"
        f"\tDevice_ID = {{{KVP}}}\n"
        f"\tSysfs path: {paths.vmbus_devices}/{KVP}\n"
        "\tRel_ID=11, target_cpu=0"
    )
    # -vvv prints what -vv prints, as the original does.
    assert lsvmbus(paths, "-vvv")[1] == text == lsvmbus(paths, "--verbose", "--verbose")[1]


def test_subchannels_sorted_by_relid_with_their_cpu(machine: Callable[..., Paths]) -> None:
    _, text = lsvmbus(machine(gen=2), "-v")
    scsi = [b for b in text.split("\n\n") if "SCSI" in b][0]
    assert scsi.splitlines()[1:] == ["\tRel_ID=15, target_cpu=0", "\tRel_ID=130, target_cpu=1"]


def test_a_class_the_original_does_not_know_is_unknown(machine: Callable[..., Paths]) -> None:
    _, text = lsvmbus(machine(gen=2, extra_unknown=True))
    assert "VMBUS ID 20: Unknown\n" in text


def test_without_vmbus_says_so_and_exits_255(tmp_path: str) -> None:
    paths = Paths(sys=os.path.join(str(tmp_path), "sys"))
    rc, text = lsvmbus(paths)
    assert rc == 255
    assert text == f"{paths.vmbus_devices} doesn't exist: exiting...\n"


def test_hostile_sysfs_values_are_escaped(machine: Callable[..., Paths]) -> None:
    """A class id with a line break and an escape sequence cannot forge lines or
    reach the terminal raw."""
    paths = only_kvp_and_heartbeat(machine)
    with open(os.path.join(paths.vmbus_devices, KVP, "class_id"), "w") as f:
        f.write("{a9a0f4e7\x1b[2J\nVMBUS ID 99: [Forged]}\n")
    _, text = lsvmbus(paths, "-v")
    assert "\x1b" not in text
    assert not any(line.startswith("VMBUS ID 99") for line in text.splitlines())
