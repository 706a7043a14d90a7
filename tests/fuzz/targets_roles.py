"""Fuzz targets for the three role state machines, driven the way their daemons drive
them, with every collaborator an in-memory fake whose answers (and failures) are drawn
from the input too.

Messages are random bytes, valid messages built with the encoders, or those mutated.
A role may answer bad input only with a failure reply: no exception, every host
request answered exactly once, replies well-formed, and (fcopy) what is committed is
exactly what the host sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hvguest.errors import HvGuestError, LocalUsageError, WireError
from hvguest.roles import fcopy as fr
from hvguest.roles import kvp as kr
from hvguest.roles import vss as vr
from hvguest.roles.step import Log, Step
from hvguest.wire import fcopy, kvp, vss
from hvguest.wire.kvp_layout import KVP_MSG_SIZE
from hvguest.wire.status import HvStatus, status_name

from .harness import Draw, Target, random_seeds

OK, CONT = HvStatus.HV_S_OK, HvStatus.HV_S_CONT
FAILURES = (HvStatus.HV_E_FAIL, HvStatus.HV_INVALIDARG, HvStatus.HV_ERROR_DISK_FULL)

# Pieces of IP lists: valid, nearly valid and hostile.
IP_WORDS = ("10.0.0.5", "fe80::1", "255.255.255.0", "24", "/64", "::", "1.2.3", "%eth0",
            "fe80::1%x\n pre-up id", " ", "ffff:ffff::", "0.0.0.0", "2001:db8::/32", "1e3")


def _mutate(d: Draw, message: bytes) -> bytes:
    buf = bytearray(message)
    for _ in range(d.below(4)):
        if buf:
            buf[d.uint(2) % len(buf)] = d.uint(1)
    return bytes(buf)


def _message(d: Draw, valid: Callable[[], bytes], size: int) -> bytes:
    kind = d.below(4)
    if kind == 0:
        return d.blob(size + 8)
    if kind == 1:
        return d.raw(size).ljust(size, b"\0")
    try:
        message = valid()
    except WireError:  # drawn fields too long for the encoder: a raw message instead
        return d.blob(size + 8)
    return message if kind == 2 else _mutate(d, message)


# -- KVP ---------------------------------------------------------------------------


class FakeKvpData:
    """The read-only view, and the pool actions carried out on the same dicts."""

    def __init__(self, d: Draw) -> None:
        self.d = d
        self.pools: dict[int, dict[str, str]] = {}

    def _maybe_fail(self) -> None:
        if self.d.below(16) == 0:
            raise HvGuestError("pool file unavailable (fake)")

    def get(self, pool: int, key: str) -> str | None:
        self._maybe_fail()
        return self.pools.get(pool, {}).get(key)

    def carry_out(self, action: kr.WritePool | kr.DeletePool) -> kr.PoolDone | kr.PoolFailed:
        if self.d.below(16) == 0:
            return kr.PoolFailed("pool file unavailable (fake)", "busy")
        if isinstance(action, kr.WritePool):
            self.pools.setdefault(action.pool, {})[action.key] = action.value
            return kr.PoolDone()
        return kr.PoolDone(self.pools.get(action.pool, {}).pop(action.key, None) is not None)

    def item(self, pool: int, index: int) -> tuple[str, str] | None:
        self._maybe_fail()
        items = list(self.pools.get(pool, {}).items())
        return items[index] if 0 <= index < len(items) else None

    def auto_items(self) -> Sequence[tuple[str, str]]:
        return [("FullyQualifiedDomainName", "vm.example"), ("Long", "x" * self.d.below(3000))]

    def ip_info(self, mac: str, addr_family: int) -> kvp.KvpIpInfo | None:
        if self.d.flag():
            return None
        return kvp.KvpIpInfo(mac, addr_family, self.d.flag(), "10.0.0.5", "255.0.0.0")


def _ip_list(d: Draw) -> str:
    parts = [IP_WORDS[d.below(len(IP_WORDS))] for _ in range(d.below(4))]
    return ";".join(parts) + (d.text(8) if d.flag() else "")


def _kvp_request(d: Draw) -> bytes:
    pool, key, value = d.below(6), d.text(40), d.text(60)
    requests: list[Callable[[], kvp.KvpRequest]] = [
        lambda: kvp.KvpGet(pool, key),
        lambda: kvp.KvpSet(pool, key, value),
        lambda: kvp.KvpDelete(pool, key),
        lambda: kvp.KvpEnumerate(pool, d.uint(1) if d.flag() else d.uint(4) & 0x7FFFFFFF),
        lambda: kvp.KvpGetIpInfo(pool, "00:15:5D:00:00:01" if d.flag() else key, d.uint(1)),
        lambda: kvp.KvpSetIpInfo(pool, "{" + key + "}", d.uint(1), d.flag(), _ip_list(d),
                                 _ip_list(d), _ip_list(d), _ip_list(d)),
        lambda: kvp.KvpRegister(key),
    ]
    return requests[d.below(len(requests))]().encode()


def _kvp_reply_ok(result: kr.Step[kr.Action], message: bytes, fake: FakeKvpData) -> bool:
    """Replies are well-formed; a successful one carries what the store holds."""
    assert result.reply is not None and len(result.reply) == KVP_MSG_SIZE, "KVP reply size"
    status = int.from_bytes(result.reply[:4], "little")
    try:
        request = kvp.decode_kvp_request(message)
    except WireError:
        assert status != OK, f"malformed request answered {status:#x}"
        return False
    if status != OK:
        return status == CONT
    stored = fake.pools.get(request.pool, {}) if hasattr(request, "pool") else {}
    if isinstance(request, kvp.KvpSet):
        assert stored.get(request.key) == request.value, "SET answered OK, value not stored"
    elif isinstance(request, kvp.KvpGet):
        value = kvp.decode_kvp_reply(kvp.KvpOp.GET, result.reply).value
        auto = dict(fake.auto_items()) if request.pool == kvp.KvpPool.AUTO else {}
        assert value in (stored.get(request.key), auto.get(request.key)), "GET: wrong value"
    elif isinstance(request, kvp.KvpEnumerate) and request.pool != kvp.KvpPool.AUTO:
        answer = kvp.decode_kvp_reply(kvp.KvpOp.ENUMERATE, result.reply)
        assert (answer.key, answer.value) in stored.items(), "ENUMERATE: not a stored item"
    return True


def kvp_role_target(data: bytes) -> bool:
    d = Draw(data)
    fake = FakeKvpData(d)
    role = kr.KvpRole(fake)
    now, served = 0.0, False
    for _ in range(1 + d.below(12)):
        now += d.below(100)
        event = d.below(16)
        if role.state is kr.KvpState.UNREGISTERED or (
            event == 0 and role.state is kr.KvpState.READY
        ):  # the daemon registers after opening the device, re-registers after a loss
            if event == 1:
                role.lost()
            else:
                role.registered(d.text(10))
        elif role.state is kr.KvpState.APPLYING:
            if event == 2:
                role.lost()
                continue
            status = OK if d.flag() else FAILURES[d.below(3)]
            result = role.complete(kr.IpApplied(status, d.text(20)), now)
            assert result.reply is not None and len(result.reply) == KVP_MSG_SIZE
            assert int.from_bytes(result.reply[:4], "little") == status, "SET_IP_INFO status"
        else:
            message = _message(d, lambda: _kvp_request(d), KVP_MSG_SIZE)
            requests = role.counters.requests
            result = role.handle(message, now)
            writes = [a for a in result.actions if isinstance(a, kr.WritePool | kr.DeletePool)]
            if writes:  # the daemon writes, then hands the outcome back for the reply
                assert result.reply is None and role.state is kr.KvpState.WRITING
                assert role.counters.requests == requests, "counted before the outcome"
                result = role.complete(fake.carry_out(writes[0]), now)
            elif result.reply is None:
                assert role.state is kr.KvpState.APPLYING
                assert any(isinstance(a, kr.ApplyIpConfig) for a in result.actions)
                served = True
                continue
            assert role.counters.requests == requests + 1, "reply not counted once"
            served |= _kvp_reply_ok(result, message, fake)
    return served


# -- VSS ---------------------------------------------------------------------------


def _vss_replies(step: Step[vr.Action]) -> list[tuple[int, str]]:
    """(status, op) of the step's reply, if any; the reply and its Answered agree."""
    answered = [a for a in step.actions if isinstance(a, vr.Answered)]
    if step.reply is None:
        assert not answered, "answered without a reply"
        return []
    assert len(step.reply) == vss.VSS_MSG_SIZE, "VSS reply size"
    assert len(answered) == 1, "a reply not recorded once"
    status = int.from_bytes(step.reply[:4], "little")
    assert status_name(status) == answered[0].status, "status not in reply"
    return [(status, answered[0].op)]


_VSS_RESULTS: dict[vr.VssState, Callable[[bool, str], vr.Outcome]] = {
    vr.VssState.CHECKING: vr.CapabilityChecked,
    vr.VssState.FREEZING: vr.FreezeDone,
    vr.VssState.THAWING: vr.ThawDone,
}


def vss_role_target(data: bytes) -> bool:
    """Every host message is answered exactly once: at once, or by the result of the
    work it started; one arriving while work runs is refused at once; a timer or
    stop while work runs is the daemon's misuse. Accepted: an input that got a
    FREEZE through to an OK reply."""
    d = Draw(data)
    role = vr.VssRole(auto_thaw=1 + d.below(60), hbu_flag_in_status=d.flag())
    now, outstanding, served = 0.0, False, False
    busy_states = (vr.VssState.CHECKING, vr.VssState.FREEZING, vr.VssState.THAWING)
    for _ in range(1 + d.below(16)):
        now += d.below(30)
        event = d.below(8)
        if role.state in _VSS_RESULTS and event < 4:
            outcome = _VSS_RESULTS[role.state](d.flag(), d.text(10))
            replies = _vss_replies(role.complete(outcome, now))
            assert len(replies) == (1 if outstanding else 0), "request not answered once"
            outstanding = False
            served |= any(status == OK and op == "FREEZE" for status, op in replies)
        elif event in (5, 6):
            happened: vr.Outcome = vr.AutoThawDue() if event == 5 else vr.Stopping()
            if role.state in busy_states:
                state = role.state
                try:
                    role.complete(happened, now)
                except LocalUsageError:
                    assert role.state is state, "misuse changed the state"
                    continue
                raise AssertionError("timer or stop during work not refused")
            assert not _vss_replies(role.complete(happened, now))
        else:
            message = _message(d, lambda: vss.VssMessage(d.below(10), d.uint(4)).encode(), 12)
            busy = role.state in busy_states
            replies = _vss_replies(role.handle(message, now))
            if busy:
                assert len(replies) == 1 and replies[0][0] != OK, "busy, not refused"
            elif not replies:
                assert role.state in busy_states, "no reply and no work started"
                outstanding = True
            else:
                assert len(replies) == 1, "more than one reply"
        if role.state is vr.VssState.FROZEN:
            assert role.deadline is not None and role.frozen_at is not None
    return served


# -- fcopy -------------------------------------------------------------------------


def overlay(buf: bytearray, offset: int, data: bytes) -> None:
    """pwrite() into a file image: a gap before ``offset`` reads as zeros."""
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


class FakeWriter:
    """The file side: checks what the role asks for; fails when the input says so.
    WRITEs may come in any order inside the file (resends, gaps), as from a real host;
    the committed file must be what the host's accepted WRITEs put there."""

    def __init__(self, d: Draw, max_file_size: int) -> None:
        self.d = d
        self.max = max_file_size
        self.open: fr.OpenTarget | None = None
        self.tmp = bytearray()
        self.sent = bytearray()  # what the host sent for the open transfer
        self.committed: list[bytes] = []

    def status(self) -> int:
        return OK if self.d.below(8) else FAILURES[self.d.below(3)]

    def run(self, action: fr.Action) -> int:
        if isinstance(action, fr.OpenTarget):
            assert action.file_size <= self.max, "opened a file beyond max_file_size"
            self.open, self.tmp, self.sent = action, bytearray(), bytearray()
            status = self.status()
            if status != OK:
                self.open = None
            return status
        if isinstance(action, fr.WriteData):
            return self.write(action.offset, action.data)
        if isinstance(action, fr.CommitTarget):
            assert self.open is not None, "commit without an open file"
            assert len(self.tmp) == self.open.file_size, "committed a short/long file"
            assert self.tmp == self.sent, "committed data differs from what the host sent"
            self.committed.append(bytes(self.tmp))
            self.open = None
            return OK
        if isinstance(action, fr.DiscardTarget):
            self.open = None
            return OK
        assert isinstance(action, Log), f"unknown action {action!r}"
        return OK  # a log line changes no file

    def write(self, offset: int, data: bytes) -> int:
        assert self.open is not None, "write without an open file"
        assert offset + len(data) <= min(self.open.file_size, self.max), "write beyond limit"
        status = self.status()
        if status != OK:
            self.open = None  # the writer discards its file when a write fails
            return status
        overlay(self.tmp, offset, data)
        return OK


def _fcopy_request(d: Draw, role: fr.FcopyRole, writer: FakeWriter, utf16: bool) -> bytes:
    choice = d.below(8)
    if choice == 0 or (role.state is not fr.FcopyState.RECEIVING and choice < 5):
        size = (0, d.uint(1), d.uint(2), d.uint(8))[d.below(4)]
        request: fcopy.FcopyRequest = fcopy.FcopyStart(d.text(20), "/" + d.text(20),
                                                       d.uint(4), size)
    elif choice < 6:
        offset = len(writer.tmp) if d.below(4) else d.uint(2)
        request = fcopy.FcopyWrite(offset, d.blob(300))
    else:
        request = fcopy.FcopyComplete() if choice == 6 else fcopy.FcopyCancel()
    return request.encode(utf16=utf16)


def fcopy_role_target(data: bytes) -> bool:
    d = Draw(data)
    role = fr.FcopyRole(max_file_size=(1 << 20, d.uint(2))[d.below(2)])
    writer = FakeWriter(d, role.max_file_size)
    utf16 = d.flag()
    for _ in range(1 + d.below(24)):
        now = float(d.below(100))
        if d.below(32) == 31:
            for action in role.complete(fr.ChannelLost("channel lost"), now).actions:
                writer.run(action)
            assert role.state is fr.FcopyState.IDLE
            continue
        raw = _message(d, lambda: _fcopy_request(d, role, writer, utf16), fcopy.FCOPY_START_SIZE)
        try:
            request = fcopy.decode_fcopy_request(raw, utf16=utf16)
        except WireError as exc:
            step = role.handle(fr.Malformed(exc), now)
            assert step.reply is not None and step.reply != OK, "malformed message accepted"
        else:
            if isinstance(request, fcopy.FcopyWrite) and role.accept_write(
                request.offset, len(request.data)
            ):
                overlay(writer.sent, request.offset, request.data)
                status = writer.write(request.offset, request.data)
                if status != OK:
                    role.complete(fr.FragmentFailed(request.offset, status, "fake failure"), now)
                continue
            step = role.handle(request, now)
            if isinstance(request, fcopy.FcopyWrite) and any(
                isinstance(a, fr.WriteData) for a in step.actions
            ):
                overlay(writer.sent, request.offset, request.data)
        status = OK
        for action in step.actions:
            status = writer.run(action)
            if status != OK:
                break
        if step.reply is None:
            role.complete(fr.Done(status), now)
        if role.state is not fr.FcopyState.RECEIVING:
            assert writer.open is None, "file left open"
    return bool(writer.committed)


ROLE_TARGETS = [
    Target("role_kvp", kvp_role_target, random_seeds(32, 2000)),
    Target("role_vss", vss_role_target, random_seeds(32, 300)),
    Target("role_fcopy", fcopy_role_target, random_seeds(256, 2000)),
]
