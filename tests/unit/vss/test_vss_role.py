"""The VSS role: transitions, replies byte by byte, failure replies."""

from __future__ import annotations

import struct

import pytest

from hvguest.roles.vss import (
    ArmAutoThaw,
    CancelAutoThaw,
    CheckCapability,
    Freeze,
    Reply,
    Thaw,
    VssRole,
    VssState,
)

OK, E_FAIL, INVALIDARG = 0, 0x80004005, 0x80070057


def msg(op, flags=0, pad=b"\0" * 7):
    return bytes([op]) + pad + struct.pack("<I", flags)


def status(reply: Reply) -> int:
    assert len(reply.data) == 12
    return struct.unpack_from("<I", reply.data)[0]


def only_reply(actions) -> Reply:
    (reply,) = [a for a in actions if isinstance(a, Reply)]
    return reply


def test_hot_backup_capability_ok_carries_no_auto_recovery():
    role = VssRole(auto_thaw=60)
    assert role.on_message(msg(2), 0) == [CheckCapability()]
    reply = only_reply(role.capability_result(True, "2 filesystem(s)"))
    assert reply.data == bytes(4) + bytes(4) + struct.pack("<I", 5)
    assert role.state is VssState.IDLE


def test_hot_backup_flag_in_status_quirk():
    role = VssRole(auto_thaw=60, hbu_flag_in_status=True)
    role.on_message(msg(2), 0)
    reply = only_reply(role.capability_result(True, ""))
    assert reply.data[0] == 2 and status(reply) == 2  # the kernel forwards the flag


def test_hot_backup_capability_failure():
    role = VssRole(auto_thaw=60)
    role.on_message(msg(2), 0)
    reply = only_reply(role.capability_result(False, "cannot read mountinfo"))
    assert status(reply) == E_FAIL


def test_freeze_thaw_cycle():
    role = VssRole(auto_thaw=60)
    assert role.on_message(msg(5), 10.0) == [Freeze()]
    actions = role.freeze_result(True, "froze 2", 11.0)
    assert ArmAutoThaw(71.0) in actions
    assert status(only_reply(actions)) == OK and role.state is VssState.FROZEN
    actions = role.on_message(msg(6), 20.0)
    assert actions == [CancelAutoThaw(), Thaw("host")]
    reply = only_reply(role.thaw_result(True, "thawed", 21.0))
    assert reply.data == bytes(12) and role.state is VssState.IDLE


def test_reply_echoes_bytes_4_to_11():
    role = VssRole(auto_thaw=60)
    raw = bytes([5, 1, 2, 3, 4, 5, 6, 7]) + struct.pack("<I", 0xAABBCCDD)
    role.on_message(raw, 0)
    reply = only_reply(role.freeze_result(False, "boom", 0))
    assert reply.data == struct.pack("<I", E_FAIL) + raw[4:]


def test_failed_freeze_returns_to_idle():
    role = VssRole(auto_thaw=60)
    role.on_message(msg(5), 0)
    assert status(only_reply(role.freeze_result(False, "/b: EIO", 1))) == E_FAIL
    assert role.state is VssState.IDLE


def test_double_freeze_fails_and_stays_frozen():
    role = VssRole(auto_thaw=60)
    role.on_message(msg(5), 0)
    role.freeze_result(True, "", 0)
    reply = only_reply(role.on_message(msg(5), 3))
    assert status(reply) == E_FAIL and "already frozen" in reply.detail
    assert role.state is VssState.FROZEN


def test_thaw_without_freeze_fails():
    role = VssRole(auto_thaw=60)
    reply = only_reply(role.on_message(msg(6), 0))
    assert status(reply) == E_FAIL and "without a FREEZE" in reply.detail


@pytest.mark.parametrize("raw", [b"", b"\x05", bytes(11), bytes(13), msg(8), msg(99), msg(129)])
def test_malformed_or_unknown_gets_invalidarg(raw):
    role = VssRole(auto_thaw=60)
    reply = only_reply(role.on_message(raw, 0))
    assert status(reply) == INVALIDARG and len(reply.data) == 12
    assert role.state is VssState.IDLE


@pytest.mark.parametrize("op", [0, 1, 3, 4, 7])
def test_kernel_answered_ops(op):
    role = VssRole(auto_thaw=60)
    reply = only_reply(role.on_message(msg(op, flags=9), 0))
    assert status(reply) == OK
    flags = struct.unpack_from("<I", reply.data, 8)[0]
    assert flags == (0 if op == 3 else 9)


def test_auto_thaw_then_late_thaw_fails():
    role = VssRole(auto_thaw=60)
    role.on_message(msg(5), 0)
    role.freeze_result(True, "", 0)
    assert role.on_timer(59.9) == []
    assert role.on_timer(60.0) == [Thaw("auto")]
    assert role.thaw_result(True, "thawed", 60.1) == []  # nothing outstanding
    reply = only_reply(role.on_message(msg(6), 65))
    assert status(reply) == E_FAIL and "auto-thaw" in reply.detail
    # only once: a further THAW is a plain THAW without FREEZE
    assert "without a FREEZE" in only_reply(role.on_message(msg(6), 66)).detail


def test_busy_while_freezing():
    role = VssRole(auto_thaw=60)
    role.on_message(msg(5), 0)
    assert status(only_reply(role.on_message(msg(6), 0))) == E_FAIL
    assert role.state is VssState.FREEZING


def test_stop_while_frozen_thaws_without_reply():
    role = VssRole(auto_thaw=60)
    assert role.on_stop() == []
    role.on_message(msg(5), 0)
    role.freeze_result(True, "", 0)
    assert role.on_stop() == [CancelAutoThaw(), Thaw("stop")]
    assert role.thaw_result(True, "", 1) == []
    assert role.state is VssState.IDLE


def test_hot_backup_while_frozen_answers_at_once():
    role = VssRole(auto_thaw=60)
    role.on_message(msg(5), 0)
    role.freeze_result(True, "", 0)
    assert status(only_reply(role.on_message(msg(2), 1))) == OK


def test_result_in_wrong_state_raises():
    with pytest.raises(RuntimeError):
        VssRole(auto_thaw=60).freeze_result(True, "", 0)
