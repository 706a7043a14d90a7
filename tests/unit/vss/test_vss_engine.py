"""The freeze engine with a fake ioctl: order, rollback, foreign freezes, observer."""

from __future__ import annotations

import errno

from hvguest.vss.freeze import FreezeEngine
from hvguest.vss.mounts import Filesystem, FreezePlan, Skipped


class FakeOps:
    def __init__(self, fail=None, thaw_fail=None, open_fail=None):
        self.fail = fail or {}
        self.thaw_fail = thaw_fail or {}
        self.open_fail = open_fail or {}
        self.calls: list[tuple[str, str]] = []
        self.paths: dict[int, str] = {}
        self.frozen: set[str] = set()
        self.open_fds: set[int] = set()

    def open_dir(self, path):
        if path in self.open_fail:
            raise OSError(self.open_fail[path], "nope")
        fd = 100 + len(self.paths)
        self.paths[fd] = path
        self.open_fds.add(fd)
        return fd

    def freeze(self, fd):
        path = self.paths[fd]
        self.calls.append(("freeze", path))
        if path in self.fail:
            raise OSError(self.fail[path], "fail")
        self.frozen.add(path)

    def thaw(self, fd):
        path = self.paths[fd]
        self.calls.append(("thaw", path))
        if path in self.thaw_fail:
            raise OSError(self.thaw_fail[path], "fail")
        self.frozen.discard(path)

    def close(self, fd):
        self.open_fds.discard(fd)


class RecordingObserver:
    def __init__(self):
        self.events = []

    def arm(self, fds, labels):
        self.events.append(("arm", tuple(labels)))

    def freezing(self, i):
        self.events.append(("freezing", i))

    def frozen(self, i):
        self.events.append(("frozen", i))

    def not_frozen(self, i):
        self.events.append(("not_frozen", i))

    def thawed(self, i):
        self.events.append(("thawed", i))

    def disarm(self):
        self.events.append(("disarm",))


def _plan(*mps):
    return FreezePlan(
        [Filesystem(f"8:{n}", "ext4", f"/dev/sd{n}", mp) for n, mp in enumerate(mps)],
        [Skipped("/proc", "proc", "pseudo or memory filesystem (proc)")],
    )


def test_freeze_in_order_thaw_in_reverse():
    ops = FakeOps()
    obs = RecordingObserver()
    engine = FreezeEngine(ops, observer=obs)
    outcome = engine.freeze(_plan("/a", "/b", "/"))
    assert outcome.ok and engine.is_frozen
    assert [r.state for r in outcome.results] == ["frozen", "frozen", "frozen", "skipped"]
    thawed = engine.thaw()
    assert thawed.ok and not engine.is_frozen
    assert ops.calls == [
        ("freeze", "/a"),
        ("freeze", "/b"),
        ("freeze", "/"),
        ("thaw", "/"),
        ("thaw", "/b"),
        ("thaw", "/a"),
    ]
    assert not ops.open_fds
    assert obs.events[0] == ("arm", ("/a", "/b", "/"))
    assert obs.events[1:7] == [
        ("freezing", 0),
        ("frozen", 0),
        ("freezing", 1),
        ("frozen", 1),
        ("freezing", 2),
        ("frozen", 2),
    ]
    assert obs.events[-1] == ("disarm",)


def test_failure_rolls_back_and_names_mount_and_errno():
    ops = FakeOps(fail={"/b": errno.EIO})
    engine = FreezeEngine(ops)
    outcome = engine.freeze(_plan("/a", "/b", "/c"))
    assert not outcome.ok
    assert "/b" in outcome.reason and "EIO" in outcome.reason
    assert "thawed the 1 filesystem(s) already frozen" in outcome.reason
    assert ops.calls == [("freeze", "/a"), ("freeze", "/b"), ("thaw", "/a")]
    assert [r.state for r in outcome.results[:3]] == ["thawed", "failed", "planned"]
    assert not ops.frozen and not engine.is_frozen and not ops.open_fds


def test_foreign_freeze_fails_and_is_never_thawed():
    ops = FakeOps(fail={"/b": errno.EBUSY})
    obs = RecordingObserver()
    engine = FreezeEngine(ops, observer=obs)
    outcome = engine.freeze(_plan("/a", "/b"))
    assert not outcome.ok and "already frozen by someone else" in outcome.reason
    assert ("thaw", "/b") not in ops.calls
    assert ("not_frozen", 1) in obs.events
    assert outcome.results[1].state == "foreign"


def test_foreign_freeze_skip_mode():
    ops = FakeOps(fail={"/b": errno.EBUSY})
    engine = FreezeEngine(ops, foreign_freeze="skip")
    outcome = engine.freeze(_plan("/a", "/b", "/c"))
    assert outcome.ok and engine.frozen_mounts() == ["/a", "/c"]
    engine.thaw()
    assert ("thaw", "/b") not in ops.calls


def test_unsupported_is_skipped():
    ops = FakeOps(fail={"/b": errno.EOPNOTSUPP})
    engine = FreezeEngine(ops)
    outcome = engine.freeze(_plan("/a", "/b"))
    assert outcome.ok and outcome.results[1].state == "skipped"
    assert "does not support freezing" in outcome.results[1].message
    engine.thaw()


def test_open_failure_fails_before_freezing_anything():
    ops = FakeOps(open_fail={"/b": errno.EACCES})
    engine = FreezeEngine(ops)
    outcome = engine.freeze(_plan("/a", "/b"))
    assert not outcome.ok and "cannot open /b" in outcome.reason
    assert ops.calls == [] and not ops.open_fds


def test_thawed_by_someone_else_is_reported():
    ops = FakeOps(thaw_fail={"/a": errno.EINVAL})
    engine = FreezeEngine(ops)
    assert engine.freeze(_plan("/a", "/b")).ok
    outcome = engine.thaw()
    assert not outcome.ok and "/a was thawed by someone else" in outcome.reason
    assert ("thaw", "/b") in ops.calls


def test_thaw_failure_names_remedy():
    ops = FakeOps(thaw_fail={"/a": errno.EIO})
    engine = FreezeEngine(ops)
    engine.freeze(_plan("/a"))
    outcome = engine.thaw()
    assert not outcome.ok and "fsfreeze -u /a" in outcome.reason
    assert outcome.results[0].state == "thaw-failed"


def test_thaw_when_nothing_frozen_is_a_noop():
    ops = FakeOps()
    outcome = FreezeEngine(ops).thaw()
    assert outcome.ok and ops.calls == []
