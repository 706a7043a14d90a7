"""hvguest's daemons started under the reference daemons' names, the way the units
start them (-n), behind the simulated kernel and host: the process is named as the
distribution's (what pgrep and Microsoft's validation suite match), holds its
device and serves the host."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.system]

BIN = os.path.dirname(sys.executable)  # the entry points installed beside this Python


def command(name: str, workdir: str) -> list[str]:
    path = os.path.join(workdir, "hvguest.yaml")
    with open(path, "w") as f:
        f.write("kvp:\n  publish_version: false\n")
    return [os.path.join(BIN, name), "-n", "--config", path]


def holds(pid: int, device: str) -> bool:
    fds = os.path.join(f"/proc/{pid}", "fd")
    return any(os.readlink(os.path.join(fds, fd)) == device for fd in os.listdir(fds))


@pytest.mark.parametrize("name", ["hv_kvp_daemon", "hypervkvpd"])
def test_kvp_under_the_reference_name(name: str, tmp_path: str) -> None:
    workdir = str(tmp_path)
    with SimClient.start(command(name, workdir), workdir=os.path.join(workdir, "sim")) as sim:
        with open(f"/proc/{sim.daemon_pid}/comm") as f:
            assert f.read().strip() == name
        assert holds(sim.daemon_pid, "/dev/vmbus/hv_kvp")
        # What the validation suite checks: five pools, mode 644, pool 3 filled by the host.
        for i in range(11):
            assert sim.kvp_set(3, f"HostItem{i}", f"value {i}") == 0
        pools = os.path.join(sim.root, "var/lib/hyperv")
        for n in range(5):
            mode = os.stat(os.path.join(pools, f".kvp_pool_{n}")).st_mode
            assert stat.S_IMODE(mode) == 0o644, n
        assert os.path.getsize(os.path.join(pools, ".kvp_pool_3")) == 11 * 2560


@pytest.mark.parametrize(("name", "device"), [("hv_vss_daemon", "/dev/vmbus/hv_vss"),
                                              ("hv_fcopy_daemon", "/dev/vmbus/hv_fcopy")])
def test_vss_and_fcopy_under_the_reference_names(name: str, device: str, tmp_path: str) -> None:
    workdir = str(tmp_path)
    service = "vss" if "vss" in name else "fcopy"
    with SimClient.start(command(name, workdir), services=(service,),
                         workdir=os.path.join(workdir, "sim")) as sim:
        with open(f"/proc/{sim.daemon_pid}/comm") as f:
            assert f.read().strip() == name
        assert holds(sim.daemon_pid, device)
