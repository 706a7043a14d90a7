"""Freeze engine on real loop-mounted ext4/xfs/vfat, in a private mount namespace."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from procstate import freeze_blocked, process_state
from test_vss_fixtures import (
    LoopSet,
    Writer,
    assert_only_test_loops,
    freeze_path,
    in_private_ns,
    thaw_path,
)

from hvguest.vss.freeze import FreezeEngine
from hvguest.vss.mounts import SysfsBlock, build_plan, read_mountinfo

pytestmark = [pytest.mark.root, pytest.mark.system]


def _plan(loops: LoopSet, **kw):
    plan = build_plan(read_mountinfo(loops.fake_proc()), SysfsBlock("/sys"), **kw)
    assert_only_test_loops(plan.mount_points(), loops)
    return plan


def _scenario(tmp_path, body):
    def child():
        loops = LoopSet(str(tmp_path))
        try:
            return body(loops)
        finally:
            loops.cleanup()

    return in_private_ns(child)


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_freeze_blocks_writer_and_thaw_releases(tmp_path, fstype):
    if fstype == "xfs" and not shutil.which("mkfs.xfs"):
        pytest.skip("needs xfsprogs")

    def body(loops):
        fs = loops.make("a", fstype)
        plan = _plan(loops)
        engine = FreezeEngine()
        outcome = engine.freeze(plan)
        state0 = outcome.results[0].state
        try:
            assert outcome.ok, outcome.reason
            writer = Writer(os.path.join(fs.mountpoint, "file"))
            blocked = freeze_blocked(writer.proc.pid)
            state = process_state(writer.proc.pid) or "exited"
        finally:
            thawed = engine.thaw()
        finished = writer.done(10.0)
        return state0, blocked, state, thawed.ok, finished

    state, blocked, pstate, thawed, finished = _scenario(tmp_path, body)
    assert state == "frozen"
    assert blocked and pstate == "D"  # uninterruptible sleep on the frozen fs
    assert thawed and finished


def _vfat_missing() -> str | None:
    """Why a vfat filesystem cannot be made here, or None when it can."""
    if not shutil.which("mkfs.vfat"):
        return "needs mkfs.vfat (dosfstools)"
    with open("/proc/filesystems") as f:
        if any(line.split()[-1] == "vfat" for line in f if line.strip()):
            return None
    return "this kernel has no vfat (not built in, no module)"


def test_vfat_is_skipped_as_unfreezable(tmp_path):
    reason = _vfat_missing()
    if reason:
        pytest.skip(reason)

    def body(loops):
        loops.make("a")
        loops.make("fat", "vfat", 32)
        plan = _plan(loops)
        return {s.mount_point.rsplit("/", 1)[1]: s.reason for s in plan.skipped}

    skipped = _scenario(tmp_path, body)
    assert "vfat cannot be frozen" in skipped["fat"]


def test_exclude_list_and_unfreezable_and_bind_dedup(tmp_path):
    def body(loops):
        a = loops.make("a")
        loops.make("b")
        loops.make("c")
        loops.make("ro", opts="ro")
        loops.tmpfs("mem")
        loops.bind(a.mountpoint, "a-again")
        plan = _plan(loops, exclude=[os.path.join(loops.base, "mnt", "b")])
        engine = FreezeEngine()
        outcome = engine.freeze(plan)
        try:
            frozen = engine.frozen_mounts()
        finally:
            engine.thaw()
        skipped = {s.mount_point.rsplit("/", 1)[1]: s.reason for s in plan.skipped}
        also = {fs.mount_point.rsplit("/", 1)[1]: fs.also_mounted_at for fs in plan.order}
        return outcome.ok, [m.rsplit("/", 1)[1] for m in frozen], skipped, also

    ok, frozen, skipped, also = _scenario(tmp_path, body)
    assert ok
    assert frozen == ["a", "c"]  # a frozen once despite the bind mount
    assert "excluded" in skipped["b"]
    assert skipped["ro"] == "read-only filesystem"
    assert "pseudo or memory filesystem (tmpfs)" in skipped["mem"]
    assert len(also["a"]) == 1 and also["a"][0].endswith("a-again")


def test_failure_rolls_back_and_names_the_mount(tmp_path):
    """The second filesystem is already frozen by someone else: the first is thawed
    again, the reason names the second, and hvguest leaves the foreign freeze alone."""

    def body(loops):
        a = loops.make("a")
        b = loops.make("b")
        plan = _plan(loops)
        freeze_path(b.mountpoint)  # "someone else"
        try:
            engine = FreezeEngine()
            outcome = engine.freeze(plan)
            # a must be writable again right now
            writer = Writer(os.path.join(a.mountpoint, "after"))
            a_writable = writer.done(10.0)
            b_still_frozen = thaw_path(b.mountpoint)
        finally:
            thaw_path(b.mountpoint)
        states = {r.mount_point.rsplit("/", 1)[1]: r.state for r in outcome.results}
        return outcome.ok, outcome.reason, states, a_writable, b_still_frozen

    ok, reason, states, a_writable, b_still_frozen = _scenario(tmp_path, body)
    assert not ok
    assert "/mnt/b" in reason and "already frozen by someone else" in reason
    assert states == {"a": "thawed", "b": "foreign"}
    assert a_writable
    assert b_still_frozen  # we did not thaw someone else's freeze


def test_foreign_freeze_skip_never_thaws_it(tmp_path):
    def body(loops):
        loops.make("a")
        b = loops.make("b")
        plan = _plan(loops)
        freeze_path(b.mountpoint)
        try:
            engine = FreezeEngine(foreign_freeze="skip")
            outcome = engine.freeze(plan)
            frozen = engine.frozen_mounts()
            engine.thaw()
            b_still_frozen = thaw_path(b.mountpoint)
        finally:
            thaw_path(b.mountpoint)
        return outcome.ok, [m.rsplit("/", 1)[1] for m in frozen], b_still_frozen

    ok, frozen, b_still_frozen = _scenario(tmp_path, body)
    assert ok and frozen == ["a"] and b_still_frozen


def test_loop_on_loop_order(tmp_path):
    """inner.img lives on outer: inner is frozen first and thawed last."""

    def body(loops):
        outer = loops.make("outer", size_mb=128)
        loops.make("inner", parent=outer.mountpoint, size_mb=32)
        loops.make("plain")
        plan = _plan(loops)
        order = [fs.mount_point.rsplit("/", 1)[1] for fs in plan.order]
        engine = FreezeEngine()
        outcome = engine.freeze(plan)
        engine.thaw()
        return order, outcome.ok

    order, ok = _scenario(tmp_path, body)
    assert ok
    assert order.index("inner") < order.index("outer")


def test_freeze_with_dirty_data_is_prompt(tmp_path):
    def body(loops):
        fs = loops.make("a")
        with open(os.path.join(fs.mountpoint, "dirty"), "wb") as f:
            f.write(os.urandom(4 << 20))
        plan = _plan(loops)
        engine = FreezeEngine()
        t0 = time.monotonic()
        outcome = engine.freeze(plan)
        engine.thaw()
        return outcome.ok, time.monotonic() - t0

    ok, seconds = _scenario(tmp_path, body)
    assert ok and seconds < 10


def test_kernel_refusal_eopnotsupp_is_skipped(tmp_path):
    """A filesystem the table does not mark unfreezable but whose driver cannot freeze
    (here a tmpfs listed as an unknown block filesystem): FIFREEZE fails with
    EOPNOTSUPP, the mount is skipped and the others stay frozen until thaw."""

    def body(loops):
        loops.make("a")
        mem = loops.tmpfs("mem")
        proc = loops.fake_proc()
        path = os.path.join(proc, "self", "mountinfo")
        with open(path) as f:
            lines = f.readlines()
        with open(path, "w") as f:
            for line in lines:
                if line.split(" ")[4] == mem:
                    line = line.replace(" - tmpfs tmpfs ", " - weirdfs /dev/weird0 ")
                f.write(line)
        plan = build_plan(read_mountinfo(proc), SysfsBlock("/sys"))
        assert_only_test_loops(plan.mount_points(), loops)
        engine = FreezeEngine()
        outcome = engine.freeze(plan)
        frozen = engine.frozen_mounts()
        engine.thaw()
        states = {r.mount_point.rsplit("/", 1)[1]: (r.state, r.errno) for r in outcome.results}
        return outcome.ok, [m.rsplit("/", 1)[1] for m in frozen], states

    ok, frozen, states = _scenario(tmp_path, body)
    assert ok and frozen == ["a"]
    assert states["mem"] == ("skipped", "EOPNOTSUPP")


def test_xfs_under_ext4_loop_stack_with_bind(tmp_path):
    """xfs image stored on an ext4 loop, both bind-mounted elsewhere too."""
    if not shutil.which("mkfs.xfs"):
        pytest.skip("needs xfsprogs")

    def body(loops):
        outer = loops.make("outer", size_mb=400)
        inner = loops.make("inner", "xfs", parent=outer.mountpoint)
        loops.bind(inner.mountpoint, "inner-bind")
        loops.bind(outer.mountpoint, "outer-bind")
        plan = _plan(loops)
        engine = FreezeEngine()
        outcome = engine.freeze(plan)
        try:
            writer = Writer(os.path.join(inner.mountpoint, "f"))
            blocked = not writer.done(1.0)
        finally:
            engine.thaw()
        done = writer.done(10)
        order = [(fs.fstype, fs.mount_point.rsplit("/", 1)[1]) for fs in plan.order]
        return outcome.ok, order, blocked, done

    ok, order, blocked, done = _scenario(tmp_path, body)
    assert ok and blocked and done
    assert order == [("xfs", "inner"), ("ext4", "outer")]
