"""hvguest-vssd against the reference hv_vss_daemon, scenario by scenario.

Each scenario runs against both daemons, each behind its own simulated kernel and host
with the same two loop-mounted ext4 filesystems, and records what the host and the
guest can observe: reply statuses, whole reply bytes for raw requests, whether a
writer was blocked, whether a filesystem is left frozen, whether the daemon lives.

Fields that are the same: HOT_BACKUP (status 0; the kernel forwards
VSS_HBU_NO_AUTO_RECOVERY only when byte 0 of the reply is 2, so with status 0 both
return the host's own flags), a normal FREEZE/THAW cycle (0, 0, writer held until
THAW), and bytes 4-11 of every reply (echoed).

Fields that differ on purpose (``DIFFERS``), and why:

* THAW without FREEZE: reference 0 (FITHAW's EINVAL counted as success); hvguest
  HV_E_FAIL, because nothing was frozen for the backup.
* double FREEZE: reference 0 (FIFREEZE's EBUSY counted as success); hvguest HV_E_FAIL,
  the filesystems stay frozen once, until THAW or the auto-thaw bound.
* unknown operation: reference 0 ("Illegal op" logged); hvguest HV_INVALIDARG, bytes
  4-11 echoed as by the reference.
* short message: the reference sends no reply at all (the host's request fails when
  the kernel gives up on it); hvguest answers HV_INVALIDARG in a 12-byte reply.
* a filesystem already frozen by someone else: the reference answers 0 and then
  *thaws the other tool's freeze* at THAW; hvguest fails the FREEZE naming the mount
  (default ``foreign_freeze: fail``) and never thaws it.
* SIGKILL while frozen: the reference leaves the filesystems frozen (writers hang until
  ``fsfreeze -u``); hvguest's guard thaws them at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from loop_images import ext4_images
from procstate import freeze_blocked

from hvguest.sim.client import SimClient

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.reference, pytest.mark.system]

OK, E_FAIL, INVALIDARG = 0, 0x80004005, 0x80070057
MNT_A, MNT_B = "/mnt/diff-a", "/mnt/diff-b"
HVGUEST = [sys.executable, "-m", "hvguest.daemons.vssd", "--log-target", "stderr"]
REFERENCE = ["/usr/sbin/hv_vss_daemon", "-n"]

Scenario = Callable[[SimClient], dict[str, Any]]


def unfreeze(sim: SimClient, mnt: str) -> bool:
    """fsfreeze -u inside the sandbox; True if the filesystem was frozen."""
    return sim.exec(["fsfreeze", "--unfreeze", mnt]).returncode == 0


def run_scenario(command: list[str], scenario: Scenario, workdir: str) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    with SimClient.start(
        command,
        services=("vss",),
        loop_filesystems=ext4_images(workdir, (MNT_A, MNT_B)),
        network=False,
        workdir=workdir,
    ) as sim:
        try:
            return scenario(sim)
        finally:
            for mnt in (MNT_A, MNT_B):
                unfreeze(sim, mnt)


def _status(reply: bytes) -> int | None:
    return int.from_bytes(reply[:4], "little") if len(reply) >= 4 else None


# -- scenarios ------------------------------------------------------------------------


def hot_backup(sim: SimClient) -> dict[str, Any]:
    return {"hot_backup": sim.vss_hot_backup(), "with_host_flags": sim.vss_hot_backup(flags=7)}


def freeze_thaw(sim: SimClient) -> dict[str, Any]:
    freeze = sim.vss_freeze()
    w = sim.spawn(
        ["dd", "if=/dev/zero", f"of={MNT_A}/w", "bs=4096", "count=1", "conv=fsync", "status=none"]
    )
    held = freeze_blocked(w.pid)
    thaw = sim.vss_thaw()
    done = w.wait(20) == 0
    return {
        "freeze": freeze,
        "writer_held": held,
        "thaw": thaw,
        "writer_done": done,
        "alive": sim.daemon_alive(),
    }


def thaw_without_freeze(sim: SimClient) -> dict[str, Any]:
    return {"thaw": sim.vss_thaw(), "alive": sim.daemon_alive()}


def double_freeze(sim: SimClient) -> dict[str, Any]:
    first = sim.vss_freeze()
    second = sim.vss_freeze()
    thaw = sim.vss_thaw()
    return {
        "first": first,
        "second": second,
        "thaw": thaw,
        "left_frozen": [unfreeze(sim, m) for m in (MNT_A, MNT_B)],
        "alive": sim.daemon_alive(),
    }


def unknown_op(sim: SimClient) -> dict[str, Any]:
    reply = sim.vss_raw(bytes([99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]))
    # The next request answered is the proof that the daemon lived through it.
    serves_after = sim.vss_hot_backup()[0]
    return {
        "status": _status(reply),
        "len": len(reply),
        "tail": reply[4:].hex(),
        "serves_after": serves_after,
        "alive": sim.daemon_alive(),
    }


def short_message(sim: SimClient) -> dict[str, Any]:
    reply = sim.vss_raw(bytes([5, 0, 0, 0]))
    time.sleep(0.3)
    alive = sim.daemon_alive()
    after = sim.vss_hot_backup()[0] if alive else None
    return {"status": _status(reply), "len": len(reply), "alive": alive, "serves_after": after}


def foreign_freeze(sim: SimClient) -> dict[str, Any]:
    assert sim.exec(["fsfreeze", "--freeze", MNT_B]).returncode == 0
    freeze = sim.vss_freeze()
    thaw = sim.vss_thaw()
    foreign_kept = unfreeze(sim, MNT_B)  # still frozen by "someone else"?
    return {
        "freeze": freeze,
        "thaw": thaw,
        "foreign_freeze_kept": foreign_kept,
        "a_left_frozen": unfreeze(sim, MNT_A),
    }


def sigkill_while_frozen(sim: SimClient) -> dict[str, Any]:
    freeze = sim.vss_freeze()
    w = sim.spawn(
        ["dd", "if=/dev/zero", f"of={MNT_A}/k", "bs=4096", "count=1", "conv=fsync", "status=none"]
    )
    held = freeze_blocked(w.pid)
    sim.signal_daemon(signal.SIGKILL)
    try:
        w.wait(5)
        writer_done = True
    except subprocess.TimeoutExpired:
        writer_done = False
    left = [unfreeze(sim, m) for m in (MNT_A, MNT_B)]  # rescue, as an admin would
    w.wait(20)
    return {
        "freeze": freeze,
        "writer_held": held,
        "writer_done_after_kill": writer_done,
        "left_frozen": left,
    }


SCENARIOS: dict[str, Scenario] = {
    "hot_backup": hot_backup,
    "freeze_thaw": freeze_thaw,
    "thaw_without_freeze": thaw_without_freeze,
    "double_freeze": double_freeze,
    "unknown_op": unknown_op,
    "short_message": short_message,
    "foreign_freeze": foreign_freeze,
    "sigkill_while_frozen": sigkill_while_frozen,
}

# What both sides show where they must agree: equal is not enough, both could fail.
SAME: dict[str, dict[str, Any]] = {
    "hot_backup": {"hot_backup": (OK, 0), "with_host_flags": (OK, 7)},
    "freeze_thaw": {
        "freeze": OK, "writer_held": True, "thaw": OK, "writer_done": True, "alive": True,
    },
}

# What each side must show; None = the scenario is the same on both sides (see SAME).
EXPECTED: dict[str, tuple[dict[str, Any], dict[str, Any]] | None] = {
    "hot_backup": None,
    "freeze_thaw": None,
    "thaw_without_freeze": ({"thaw": OK}, {"thaw": E_FAIL, "alive": True}),
    "double_freeze": (
        {"second": OK},
        {"first": OK, "second": E_FAIL, "thaw": OK, "left_frozen": [False, False], "alive": True},
    ),
    "unknown_op": (
        {"status": OK, "serves_after": OK},
        {"status": INVALIDARG, "len": 12, "serves_after": OK, "alive": True},
    ),
    "short_message": (
        {"len": 0, "alive": True},  # no reply from the reference
        {"status": INVALIDARG, "len": 12, "alive": True, "serves_after": OK},
    ),
    "foreign_freeze": (
        {"freeze": OK, "foreign_freeze_kept": False},
        {"freeze": E_FAIL, "foreign_freeze_kept": True, "a_left_frozen": False},
    ),
    "sigkill_while_frozen": (
        {"freeze": OK, "writer_held": True, "writer_done_after_kill": False},
        {
            "freeze": OK,
            "writer_held": True,
            "writer_done_after_kill": True,
            "left_frozen": [False, False],
        },
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_differential(name: str, tmp_path) -> None:
    scenario = SCENARIOS[name]
    ref = run_scenario(REFERENCE, scenario, str(tmp_path / "reference"))
    ours = run_scenario(HVGUEST, scenario, str(tmp_path / "hvguest"))
    expected = EXPECTED[name]
    if expected is None:
        assert ours == ref, f"{name}: hvguest {ours} != reference {ref}"
        assert ours == SAME[name], f"{name}: both sides agree on {ours}, expected {SAME[name]}"
        return
    want_ref, want_ours = expected
    for key, value in want_ref.items():
        assert ref[key] == value, f"{name}: reference {key}={ref[key]!r}, expected {value!r}"
    for key, value in want_ours.items():
        assert ours[key] == value, f"{name}: hvguest {key}={ours[key]!r}, expected {value!r}"


def test_same_fields_in_detail(tmp_path) -> None:
    """The fields listed as the same, spelled out."""
    ref = run_scenario(REFERENCE, freeze_thaw, str(tmp_path / "reference"))
    ours = run_scenario(HVGUEST, freeze_thaw, str(tmp_path / "hvguest"))
    for side in (ref, ours):
        assert side == {
            "freeze": OK,
            "writer_held": True,
            "thaw": OK,
            "writer_done": True,
            "alive": True,
        }
