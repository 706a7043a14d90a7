"""The VSS role: transitions, replies byte by byte, failure replies, misuse."""

from __future__ import annotations

import struct

import pytest

from hvguest.errors import LocalUsageError
from hvguest.roles.step import Log, Step
from hvguest.roles.vss import (
    Answered,
    ArmAutoThaw,
    AutoThawDue,
    CancelAutoThaw,
    CapabilityChecked,
    CheckCapability,
    Freeze,
    FreezeDone,
    Stopping,
    Thaw,
    ThawDone,
    VssRole,
    VssState,
)

OK, E_FAIL, INVALIDARG = 0, 0x80004005, 0x80070057


def msg(op, flags=0, pad=b"\0" * 7):
    return bytes([op]) + pad + struct.pack("<I", flags)


class Reply:
    """A step's reply with what the role said about it (its Answered action)."""

    def __init__(self, step: Step) -> None:
        assert step.reply is not None
        self.data = step.reply
        (answered,) = [a for a in step.actions if isinstance(a, Answered)]
        self.detail = answered.detail
        self.answered = answered


def status(reply: Reply) -> int:
    assert len(reply.data) == 12
    return struct.unpack_from("<I", reply.data)[0]


def only_reply(step: Step) -> Reply:
    return Reply(step)


def work(step: Step) -> tuple:
    """The step's actions for the daemon, without its logging and bookkeeping."""
    return tuple(a for a in step.actions if not isinstance(a, (Log, Answered)))


def test_hot_backup_capability_ok_carries_no_auto_recovery():
    role = VssRole(auto_thaw=60)
    assert role.handle(msg(2), 0) == Step(None, (CheckCapability(),))
    reply = only_reply(role.complete(CapabilityChecked(True, "2 filesystem(s)"), 0))
    assert reply.data == bytes(4) + bytes(4) + struct.pack("<I", 5)
    assert role.state is VssState.IDLE


def test_hot_backup_flag_in_status_quirk():
    role = VssRole(auto_thaw=60, hbu_flag_in_status=True)
    role.handle(msg(2), 0)
    reply = only_reply(role.complete(CapabilityChecked(True, ""), 0))
    assert reply.data[0] == 2 and status(reply) == 2  # the kernel forwards the flag


def test_hot_backup_capability_failure():
    role = VssRole(auto_thaw=60)
    role.handle(msg(2), 0)
    reply = only_reply(role.complete(CapabilityChecked(False, "cannot read mountinfo"), 0))
    assert status(reply) == E_FAIL


def test_freeze_thaw_cycle():
    role = VssRole(auto_thaw=60)
    assert role.handle(msg(5), 10.0) == Step(None, (Freeze(),))
    step = role.complete(FreezeDone(True, "froze 2"), 11.0)
    assert work(step) == (ArmAutoThaw(71.0),)
    assert status(only_reply(step)) == OK and role.state is VssState.FROZEN
    step = role.handle(msg(6), 20.0)
    assert step == Step(None, (CancelAutoThaw(), Thaw("host")))
    reply = only_reply(role.complete(ThawDone(True, "thawed"), 21.0))
    assert reply.data == bytes(12) and role.state is VssState.IDLE


def test_reply_echoes_bytes_4_to_11():
    role = VssRole(auto_thaw=60)
    raw = bytes([5, 1, 2, 3, 4, 5, 6, 7]) + struct.pack("<I", 0xAABBCCDD)
    role.handle(raw, 0)
    reply = only_reply(role.complete(FreezeDone(False, "boom"), 0))
    assert reply.data == struct.pack("<I", E_FAIL) + raw[4:]


def test_failed_freeze_returns_to_idle():
    role = VssRole(auto_thaw=60)
    role.handle(msg(5), 0)
    assert status(only_reply(role.complete(FreezeDone(False, "/b: EIO"), 1))) == E_FAIL
    assert role.state is VssState.IDLE


def test_double_freeze_fails_and_stays_frozen():
    role = VssRole(auto_thaw=60)
    role.handle(msg(5), 0)
    role.complete(FreezeDone(True, ""), 0)
    reply = only_reply(role.handle(msg(5), 3))
    assert status(reply) == E_FAIL and "already frozen" in reply.detail
    assert role.state is VssState.FROZEN


def test_thaw_without_freeze_fails():
    role = VssRole(auto_thaw=60)
    reply = only_reply(role.handle(msg(6), 0))
    assert status(reply) == E_FAIL and "without a FREEZE" in reply.detail


@pytest.mark.parametrize("raw", [b"", b"\x05", bytes(11), bytes(13), msg(8), msg(99), msg(129)])
def test_malformed_or_unknown_gets_invalidarg(raw):
    role = VssRole(auto_thaw=60)
    reply = only_reply(role.handle(raw, 0))
    assert status(reply) == INVALIDARG and len(reply.data) == 12
    assert role.state is VssState.IDLE


@pytest.mark.parametrize("op", [0, 1, 3, 4, 7])
def test_kernel_answered_ops(op):
    role = VssRole(auto_thaw=60)
    reply = only_reply(role.handle(msg(op, flags=9), 0))
    assert status(reply) == OK
    flags = struct.unpack_from("<I", reply.data, 8)[0]
    assert flags == (0 if op == 3 else 9)


def test_auto_thaw_then_late_thaw_fails():
    role = VssRole(auto_thaw=60)
    role.handle(msg(5), 0)
    role.complete(FreezeDone(True, ""), 0)
    assert role.complete(AutoThawDue(), 59.9) == Step()
    assert role.complete(AutoThawDue(), 60.0) == Step(None, (Thaw("auto"),))
    assert role.complete(ThawDone(True, "thawed"), 60.1) == Step()  # nothing outstanding
    reply = only_reply(role.handle(msg(6), 65))
    assert status(reply) == E_FAIL and "auto-thaw" in reply.detail
    # only once: a further THAW is a plain THAW without FREEZE
    assert "without a FREEZE" in only_reply(role.handle(msg(6), 66)).detail


def test_busy_while_freezing():
    role = VssRole(auto_thaw=60)
    role.handle(msg(5), 0)
    assert status(only_reply(role.handle(msg(6), 0))) == E_FAIL
    assert role.state is VssState.FREEZING


def test_stop_while_frozen_thaws_without_reply():
    role = VssRole(auto_thaw=60)
    assert role.complete(Stopping(), 0) == Step()
    role.handle(msg(5), 0)
    role.complete(FreezeDone(True, ""), 0)
    assert role.complete(Stopping(), 1) == Step(None, (CancelAutoThaw(), Thaw("stop")))
    assert role.complete(ThawDone(True, ""), 1) == Step()
    assert role.state is VssState.IDLE


def test_hot_backup_while_frozen_answers_at_once():
    role = VssRole(auto_thaw=60)
    role.handle(msg(5), 0)
    role.complete(FreezeDone(True, ""), 0)
    assert status(only_reply(role.handle(msg(2), 1))) == OK


@pytest.mark.parametrize(
    "outcome, event",
    [
        (FreezeDone(True, ""), "frozen"),
        (FreezeDone(False, "x"), "freeze_failed"),
        (ThawDone(True, ""), "thawed"),
        (CapabilityChecked(True, ""), "capability_checked"),
    ],
)
def test_outcome_nobody_asked_for_is_misuse_naming_state_and_event(outcome, event):
    role = VssRole(auto_thaw=60)
    with pytest.raises(LocalUsageError, match=f"'{event}' is not accepted in state IDLE"):
        role.complete(outcome, 0)
    assert role.state is VssState.IDLE


def test_stop_or_timer_during_a_freeze_is_misuse():
    """The daemon serves one thing at a time: a stop or timer while the freeze
    itself runs would be its bug, not something to paper over."""
    role = VssRole(auto_thaw=60)
    role.handle(msg(5), 0)
    with pytest.raises(LocalUsageError, match="'stop' is not accepted in state FREEZING"):
        role.complete(Stopping(), 0)
    with pytest.raises(LocalUsageError, match="'auto_thaw_due' is not accepted in state FREEZING"):
        role.complete(AutoThawDue(), 0)
    assert role.state is VssState.FREEZING


def test_full_freeze_sequence_replies_only_once_frozen():
    role = VssRole(auto_thaw=30)
    raw = bytes([5, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3, 4])
    asked = role.handle(raw, 100.0)
    assert asked.reply is None and asked.actions == (Freeze(),)  # no reply before the work
    done = role.complete(FreezeDone(True, "froze 3"), 101.0)
    assert done.reply == bytes(4) + raw[4:]
    assert done.actions[0] == ArmAutoThaw(131.0)  # armed before the host hears "frozen"
    assert Answered("FREEZE", "HV_S_OK", "froze 3") in done.actions
    (said,) = [a for a in done.actions if isinstance(a, Log)]
    assert said.message % said.args == "FREEZE -> HV_S_OK: froze 3"
    assert role.state is VssState.FROZEN and role.deadline == 131.0


def test_stop_while_frozen_thaws_then_the_host_thaw_fails():
    role = VssRole(auto_thaw=60)
    role.handle(msg(5), 0)
    role.complete(FreezeDone(True, ""), 0)
    assert work(role.complete(Stopping(), 5)) == (CancelAutoThaw(), Thaw("stop"))
    assert role.state is VssState.THAWING
    assert role.complete(ThawDone(True, ""), 5).reply is None
    assert status(only_reply(role.handle(msg(6), 6))) == E_FAIL


def test_failure_replies_are_logged_as_warnings_with_the_status_name():
    role = VssRole(auto_thaw=60)
    step = role.handle(msg(6), 0)
    (said,) = [a for a in step.actions if isinstance(a, Log)]
    assert said.level == 30 and said.args[1] == "HV_E_FAIL"
    assert said.fields == {"VSS_OP": "THAW", "STATUS": "HV_E_FAIL"}
