"""VMBus inventory and hvguestctl vmbus on fixture sysfs trees."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from hvguest.cli.main import main as hvguestctl
from hvguest.paths import Paths
from hvguest.vmbus.inventory import CLASSES, SERVICE_CLASS, scan


def test_class_table_is_complete() -> None:
    names = {c.name for c in CLASSES.values()}
    assert len(CLASSES) == 20
    assert {"ide", "scsi", "fc", "netvsc", "nd", "pcie", "synthvid", "keyboard", "mouse", "kvp",
            "timesync", "heartbeat", "shutdown", "fcopy", "vss", "balloon", "avma1", "avma2",
            "rdv", "imc"} == names
    assert set(SERVICE_CLASS) == {"heartbeat", "shutdown", "timesync", "kvp", "vss", "fcopy"}
    assert CLASSES["a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"].description == "[Data Exchange]"


def test_gen1_has_ide_and_services(machine: Callable[..., Paths]) -> None:
    inv = scan(machine(gen=1))
    assert inv.present
    names = [d.name for d in inv.devices]
    assert "ide" in names and "scsi" in names and "netvsc" in names
    ids = [d.vmbus_id for d in inv.devices]
    assert ids == sorted(ids)  # lsvmbus order
    kvp = inv.service_device("kvp")
    assert kvp is not None and kvp.driver == "hv_utils" and kvp.state == 3
    assert kvp.instance == "242ff919-07db-4180-9c2e-b86cb68c8c55"
    assert kvp.primary is not None and kvp.primary.relid == kvp.vmbus_id
    assert kvp.primary.counters["interrupts"] == 40 + kvp.vmbus_id
    assert {"cpu", "in_mask", "out_mask", "read_avail", "write_avail", "events"} <= set(
        kvp.primary.counters)
    assert not inv.unreadable


def test_gen2_has_no_ide_and_subchannels(machine: Callable[..., Paths]) -> None:
    inv = scan(machine(gen=2))
    assert "ide" not in [d.name for d in inv.devices]
    scsi = inv.by_class("ba6163d9-04a1-4d29-b605-72e2ffb1dc7f")[0]
    assert len(scsi.channels) == 2
    assert [c.counters["subchannel_id"] for c in scsi.channels] == [0, 1]


def test_fcopy_driver_by_kernel(machine: Callable[..., Paths]) -> None:
    old = scan(machine(kernel="6.1")).service_device("fcopy")
    assert old is not None and old.driver == "hv_utils" and old.uio is None
    new = scan(machine(kernel="6.12")).service_device("fcopy")
    assert new is not None and new.driver == "uio_hv_generic"
    assert new.uio == "uio0" and new.uio_map_size == 0xA000


def test_omitted_and_unbound(machine: Callable[..., Paths]) -> None:
    inv = scan(machine(omit=["vss", "fcopy"], unbind=["kvp"], extra_unknown=True))
    assert inv.service_device("vss") is None and inv.service_device("fcopy") is None
    kvp = inv.service_device("kvp")
    assert kvp is not None and kvp.driver is None
    unknown = [d for d in inv.devices if d.name == "unknown"]
    assert unknown and unknown[0].description == "Unknown"


def test_non_hyperv(tmp_path: Any, builder: Any) -> None:
    inv = scan(builder.build_non_hyperv(str(tmp_path)))
    assert not inv.present and inv.devices == []


def test_channel_vp_mapping_fallback_and_unreadable(machine: Callable[..., Paths]) -> None:
    paths = machine()
    inv = scan(paths)
    hb = inv.service_device("heartbeat")
    assert hb is not None
    ddir = os.path.join(paths.vmbus_devices, hb.instance)
    # Older kernels: no channels/ directory at all.
    import shutil

    shutil.rmtree(os.path.join(ddir, "channels"))
    # An attribute that cannot be read (a directory stands in for EACCES/EINVAL).
    os.unlink(os.path.join(ddir, "state"))
    os.mkdir(os.path.join(ddir, "state"))
    inv = scan(paths)
    hb = inv.service_device("heartbeat")
    assert hb is not None and hb.state is None
    assert [(c.relid, c.cpu) for c in hb.channels] == [(hb.vmbus_id, 0)]
    assert any(u.startswith(os.path.join(ddir, "state")) for u in inv.unreadable)


def test_cli_vmbus_lsvmbus_format(machine: Callable[..., Paths],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    paths = machine(gen=1)
    assert hvguestctl(["vmbus", "--sys-root", paths.sys]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "VMBUS ID  9: [Heartbeat]" in lines
    assert "VMBUS ID 14: Synthetic IDE Controller" in lines
    assert hvguestctl(["vmbus", "-v", "--sys-root", paths.sys]) == 0
    out = capsys.readouterr().out
    assert ("VMBUS ID  9: Class_ID = {57164f39-9115-4e78-ab55-382f3bd5422d} - [Heartbeat]"
            in out)
    assert "\tRel_ID=9, target_cpu=0" in out and "driver = hv_utils" in out
    assert hvguestctl(["vmbus", "-vv", "--sys-root", paths.sys]) == 0
    out = capsys.readouterr().out
    assert "Sysfs path: " in out and "interrupts=49" in out


def test_cli_vmbus_json(machine: Callable[..., Paths],
                        capsys: pytest.CaptureFixture[str]) -> None:
    paths = machine(kernel="6.12")
    assert hvguestctl(["--root-dir", os.path.dirname(paths.sys), "vmbus", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["present"] is True
    fcopy = [d for d in doc["devices"] if d["class"] == "fcopy"][0]
    assert fcopy["driver"] == "uio_hv_generic" and fcopy["uio"] == "uio0"
    assert fcopy["channels"][0]["relid"] == 13


def test_cli_vmbus_non_hyperv(tmp_path: Any, builder: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    paths = builder.build_non_hyperv(str(tmp_path))
    assert hvguestctl(["vmbus", "--sys-root", paths.sys]) == 1
    assert "not a Hyper-V guest" in capsys.readouterr().err
