"""The fcopy state machine: requests in, actions and statuses out (no I/O)."""

from __future__ import annotations

import pytest

from hvguest.errors import LocalUsageError, WireError
from hvguest.roles.fcopy import (
    ChannelLost,
    CommitTarget,
    DiscardTarget,
    Done,
    FcopyRole,
    FcopyState,
    FcopyStep,
    FragmentFailed,
    Malformed,
    OpenTarget,
    WriteData,
)
from hvguest.roles.step import Log
from hvguest.wire.fcopy import (
    CREATE_PATH,
    OVER_WRITE,
    FcopyCancel,
    FcopyComplete,
    FcopyStart,
    FcopyWrite,
    decode_fcopy_reply,
)
from hvguest.wire.status import HvStatus

OK = HvStatus.HV_S_OK
FAIL = HvStatus.HV_E_FAIL


def status(step: FcopyStep) -> int | None:
    """The status a step answers (None: actions outstanding)."""
    return None if step.reply is None else decode_fcopy_reply(step.reply)


def files(step: FcopyStep) -> tuple:
    """The step's actions for the writer (its Log lines left out)."""
    return tuple(a for a in step.actions if not isinstance(a, Log))


def logs(step: FcopyStep) -> list[str]:
    return [a.message % a.args for a in step.actions if isinstance(a, Log)]


def finish(role: FcopyRole, outcome: int, now: float) -> int | None:
    """The daemon ran the last step's actions with this result."""
    return status(role.complete(Done(outcome), now))


def started(size: int = 10, limit: int = 1 << 30) -> FcopyRole:
    role = FcopyRole(limit)
    step = role.handle(FcopyStart("f", "/tmp", OVER_WRITE | CREATE_PATH, size), 0.0)
    assert step.reply is None
    assert step.actions == (OpenTarget("/tmp", "f", True, True, size),)
    assert finish(role, OK, 0.0) == OK
    assert role.state is FcopyState.RECEIVING
    return role


def test_full_transfer():
    role = started(10)
    step = role.handle(FcopyWrite(0, b"12345"), 1.0)
    assert step.actions == (WriteData(0, b"12345"),) and step.reply is None
    finish(role, OK, 1.0)
    role.handle(FcopyWrite(5, b"67890"), 1.5)
    finish(role, OK, 1.5)
    step = role.handle(FcopyComplete(), 2.0)
    assert step.actions == (CommitTarget(),)
    assert finish(role, OK, 2.0) == OK
    assert role.state is FcopyState.IDLE
    [t] = role.finished
    assert (t.result, t.bytes_done, t.duration(9.0)) == ("ok", 10, 2.0)


@pytest.mark.parametrize("request_", [FcopyWrite(0, b"x"), FcopyComplete()])
def test_write_or_complete_before_start(request_):
    role = FcopyRole(100)
    step = role.handle(request_, 0.0)
    assert status(step) == FAIL and files(step) == ()
    assert logs(step) == [f"fcopy {type(request_).__name__.replace('Fcopy', '')} refused"
                          .replace("Write refused", "WRITE_TO_FILE without a transfer in"
                                   " progress: refused")
                          .replace("Complete refused", "COMPLETE_FCOPY without a transfer in"
                                   " progress: refused")]
    assert role.state is FcopyState.IDLE


def test_cancel_without_transfer_is_ok():
    role = FcopyRole(100)
    assert status(role.handle(FcopyCancel(), 0.0)) == OK


def test_cancel_mid_transfer_discards():
    role = started()
    role.handle(FcopyWrite(0, b"abc"), 0.0)
    finish(role, OK, 0.0)
    step = role.handle(FcopyCancel(), 1.0)
    assert status(step) == OK and isinstance(files(step)[0], DiscardTarget)
    assert role.state is FcopyState.IDLE
    assert role.finished[-1].result == "cancelled"


def test_start_twice_supersedes():
    role = started()
    step = role.handle(FcopyStart("g", "/tmp", 0, 5), 1.0)
    assert isinstance(files(step)[0], DiscardTarget)
    assert files(step)[1] == OpenTarget("/tmp", "g", False, False, 5)
    assert logs(step) == ["START of g while /tmp/f is open: abandoning the open transfer"]
    assert step.reply is None
    finish(role, OK, 1.0)
    assert role.finished[-1].result == "superseded"
    assert role.transfer is not None and role.transfer.file_name == "g"


def test_resend_gap_and_zero_length_are_accepted_counted_and_logged_once():
    role = started(10)
    warnings: list[str] = []

    def write(offset: int, data: bytes) -> None:
        step = role.handle(FcopyWrite(offset, data), 0.0)
        assert step.reply is None and files(step) == (WriteData(offset, data),)
        assert all(a.level == 30 for a in step.actions if isinstance(a, Log))
        warnings.extend(logs(step))
        assert finish(role, OK, 0.0) == OK

    write(0, b"ab")
    write(0, b"ab")  # exact resend
    write(1, b"bc")  # partial resend
    write(6, b"gh")  # gap: 3-5 stay a hole
    write(1, b"b")  # overlap again
    write(9, b"j")  # another gap
    write(4, b"")  # zero-length: neither gap nor overlap
    transfer = role.transfer
    assert transfer is not None
    assert (transfer.bytes_done, transfer.gaps, transfer.overlaps) == (10, 2, 3)
    assert len(warnings) == 2, warnings
    assert "WRITE of bytes 6-7 leaves a gap after 3 (bytes 3-5 read as zeros" in warnings[1]
    assert "WRITE of bytes 0-1 overlaps the data received up to 2" in warnings[0]
    step = role.handle(FcopyComplete(), 0.0)
    assert step.actions == (CommitTarget(),)
    finish(role, OK, 1.0)
    assert role.finished[-1].result == "ok" and role.finished[-1].gaps == 2


def test_complete_short_of_file_size_fails_after_a_gap():
    role = started(10)
    role.handle(FcopyWrite(5, b"fghij"[:4]), 0.0)  # ends at 9, one byte short
    finish(role, OK, 0.0)
    step = role.handle(FcopyComplete(), 0.0)
    assert status(step) == FAIL and isinstance(files(step)[0], DiscardTarget)
    assert "ends at 9 of 10" in files(step)[0].reason
    assert role.finished[-1].result == "incomplete"


def test_write_beyond_file_size_refused():
    role = started(4)
    step = role.handle(FcopyWrite(0, b"12345"), 0.0)
    assert status(step) == FAIL
    assert "file_size 4" in files(step)[0].reason


def test_start_beyond_max_size_refused():
    role = FcopyRole(100)
    step = role.handle(FcopyStart("f", "/tmp", 0, 101), 0.0)
    assert status(step) == FAIL and step.actions == ()
    assert role.state is FcopyState.IDLE
    assert role.finished[-1].result == "refused"


def test_complete_short_of_file_size_refused():
    role = started(10)
    role.handle(FcopyWrite(0, b"abc"), 0.0)
    finish(role, OK, 0.0)
    step = role.handle(FcopyComplete(), 0.0)
    assert status(step) == FAIL and isinstance(files(step)[0], DiscardTarget)
    assert role.finished[-1].result == "incomplete"
    assert role.state is FcopyState.IDLE


def test_failed_open_returns_writer_status():
    role = FcopyRole(100)
    role.handle(FcopyStart("f", "/tmp", 0, 1), 0.0)
    assert finish(role, HvStatus.HV_ERROR_ALREADY_EXISTS, 0.0) == HvStatus.HV_ERROR_ALREADY_EXISTS
    assert role.state is FcopyState.IDLE
    assert role.finished[-1].result == "HV_ERROR_ALREADY_EXISTS"


def test_failed_write_poisons_transfer():
    role = started(10)
    role.handle(FcopyWrite(0, b"abc"), 0.0)
    assert finish(role, HvStatus.HV_ERROR_DISK_FULL, 0.0) == HvStatus.HV_ERROR_DISK_FULL
    assert role.state is FcopyState.FAILED
    assert status(role.handle(FcopyWrite(3, b"d"), 0.0)) == FAIL


def test_malformed_message_mid_transfer_abandons():
    role = started()
    step = role.handle(Malformed(WireError("size too big", field="size")), 0.0)
    assert status(step) == FAIL and isinstance(files(step)[0], DiscardTarget)
    assert role.state is FcopyState.FAILED
    assert FcopyRole(1).handle(Malformed(WireError("x")), 0.0).actions == ()


def test_abort_discards_open_transfer():
    role = started()
    assert isinstance(role.complete(ChannelLost("stop"), 0.0).actions[0], DiscardTarget)
    assert role.finished[-1].result == "aborted"
    assert role.complete(ChannelLost("again"), 0.0).actions == ()


def test_outcome_nothing_asked_for_is_misuse_naming_state_and_outcome():
    role = FcopyRole(1)
    with pytest.raises(LocalUsageError, match=r"fcopy role: 'DONE' is not accepted in state IDLE"):
        role.complete(Done(), 0.0)
    with pytest.raises(LocalUsageError, match=r"'FRAGMENT_FAILED' .* state IDLE"):
        role.complete(FragmentFailed(0, FAIL, "x"), 0.0)
    assert role.state is FcopyState.IDLE


def test_request_while_actions_outstanding_is_misuse_naming_state_and_message():
    role = FcopyRole(10)
    role.handle(FcopyStart("f", "/tmp", 0, 1), 0.0)
    with pytest.raises(LocalUsageError, match=r"'CANCEL' is not accepted in state OPENING"):
        role.handle(FcopyCancel(), 0.0)
    assert role.state is FcopyState.OPENING  # the refused call changed nothing
    assert finish(role, OK, 0.0) == OK
    role.handle(FcopyWrite(0, b"x"), 0.0)
    with pytest.raises(LocalUsageError, match=r"'COMPLETE' is not accepted in state WRITING"):
        role.handle(FcopyComplete(), 0.0)
    assert finish(role, OK, 0.0) == OK
    role.handle(FcopyComplete(), 0.0)
    with pytest.raises(LocalUsageError, match=r"'START' is not accepted in state COMMITTING"):
        role.handle(FcopyStart("g", "/tmp", 0, 1), 0.0)


def test_fast_path_takes_only_the_next_fragment():
    role = started(10)
    assert role.accept_write(0, 4)
    assert role.transfer is not None and role.transfer.bytes_done == 4
    assert not role.accept_write(0, 4)  # overlap: for handle()
    assert not role.accept_write(5, 1)  # gap: for handle()
    assert not role.accept_write(4, 7)  # beyond file_size
    assert role.accept_write(4, 6)
    assert FcopyRole(10).accept_write(0, 1) is False  # no transfer


def test_fast_path_failure_poisons():
    role = started(10)
    assert role.accept_write(0, 4)
    step = role.complete(FragmentFailed(0, HvStatus.HV_ERROR_DISK_FULL, "ENOSPC"), 1.0)
    assert status(step) == HvStatus.HV_ERROR_DISK_FULL
    assert role.state is FcopyState.FAILED
    assert role.finished[-1].result == "HV_ERROR_DISK_FULL"
    assert role.finished[-1].bytes_done == 0
