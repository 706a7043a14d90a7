"""FcopyService end to end on a tmp dir: raw messages in, statuses and files out.

Both encodings are covered: UTF-8 names (legacy device, the kernel converted them)
and UTF-16LE names inside IC packets (UIO ring).
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct

import pytest

from hvguest.daemons.fcopy_ring import ic_reply as ic_answer
from hvguest.daemons.fcopy_service import FcopyService
from hvguest.fcopy.settings import FcopySettings
from hvguest.paths import Paths
from hvguest.state import StatePublisher, read_state
from hvguest.wire.fcopy import (
    CREATE_PATH,
    DATA_FRAGMENT,
    OVER_WRITE,
    FcopyCancel,
    FcopyComplete,
    FcopyStart,
    FcopyWrite,
)
from hvguest.wire.icmsg import (
    FCOPY_FW_VERSIONS,
    FCOPY_SRV_VERSIONS,
    ICMSG_REQUEST_FLAGS,
    IcHeader,
    IcMsgType,
    IcVersion,
    build_negotiate_request,
    ic_response,
    parse_negotiate_response,
)
from hvguest.wire.status import HvStatus

OK = HvStatus.HV_S_OK
FAIL = HvStatus.HV_E_FAIL


def ic_reply(service, packet: bytes) -> bytes | None:
    """The payload the ring transport sends back: a status answer echoes the
    request as its IC response (``RingBuffer.write_response``)."""
    answer = ic_answer(service, packet)
    return ic_response(packet, answer) if isinstance(answer, int) else answer


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "incoming"
    r.mkdir()
    return r


@pytest.fixture
def service(root, tmp_path):
    settings = FcopySettings(allowed_roots=[str(root)], max_file_size=1 << 24)
    publisher = StatePublisher("fcopy", Paths(run=str(tmp_path / "run")))
    return FcopyService(settings, publisher)


def send_file(
    service, directory, name, data, *, flags=OVER_WRITE, utf16=False, fragment=DATA_FRAGMENT
):
    statuses = [
        service.handle(FcopyStart(name, directory, flags, len(data)).encode(utf16), utf16=utf16)
    ]
    if statuses[0] != OK:
        return statuses
    for off in range(0, len(data), fragment):
        statuses.append(
            service.handle(FcopyWrite(off, data[off : off + fragment]).encode(), utf16=utf16)
        )
    statuses.append(service.handle(FcopyComplete().encode(), utf16=utf16))
    return statuses


def tree(root):
    return sorted(
        os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs
    )


@pytest.mark.parametrize("utf16", [False, True], ids=["utf8-legacy", "utf16-uio"])
@pytest.mark.parametrize("name", ["Привет.txt", "数据文件.bin", "party 🎉🐍.dat", "plain.txt"])
def test_unicode_names_arrive_intact(service, root, name, utf16):
    data = os.urandom(3 * DATA_FRAGMENT + 17)
    statuses = send_file(
        service, f"{root}/Ünïcode 目录 🗂", name, data, flags=CREATE_PATH, utf16=utf16
    )
    assert set(statuses) == {OK}
    assert (root / "Ünïcode 目录 🗂" / name).read_bytes() == data
    st = os.stat(root / "Ünïcode 目录 🗂" / name)
    assert stat.S_IMODE(st.st_mode) == 0o644
    [record] = service.recent
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["result"] == "ok" and record["size"] == len(data)


def test_path_traversal_refused(service, root, tmp_path):
    for directory, name in [
        ("../../etc", "passwd"),
        ("/tmp/../etc", "x"),
        (f"{root}/../..", "passwd"),
        (str(root), "../../etc/passwd"),
        ("/etc", "passwd"),
    ]:
        status = service.handle(
            FcopyStart(name, directory, OVER_WRITE | CREATE_PATH, 4).encode(), utf16=False
        )
        assert status == FAIL, (directory, name)
        # Nothing is open: the WRITE that follows is refused as well.
        assert service.handle(FcopyWrite(0, b"root").encode(), utf16=False) == FAIL
    assert tree(root) == []
    assert sorted(os.listdir(tmp_path)) == ["incoming", "run"]


def test_symlinked_directory_refused(service, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    assert send_file(service, f"{root}/link", "x", b"data")[0] == FAIL
    assert os.listdir(outside) == []


def test_write_and_complete_before_start(service, root):
    assert service.handle(FcopyWrite(0, b"x").encode(), utf16=False) == FAIL
    assert service.handle(FcopyComplete().encode(), utf16=False) == FAIL
    assert service.handle(FcopyCancel().encode(), utf16=False) == OK
    assert tree(root) == []


def test_start_twice_leaves_only_the_second(service, root):
    assert service.handle(FcopyStart("one", str(root), 0, 5).encode(), utf16=False) == OK
    assert service.handle(FcopyWrite(0, b"first").encode(), utf16=False) == OK
    assert send_file(service, str(root), "two", b"second", flags=0) == [OK, OK, OK]
    assert tree(root) == ["two"]
    assert [r["result"] for r in service.recent] == ["superseded", "ok"]


def test_size_field_larger_than_payload(service, root):
    assert service.handle(FcopyStart("f", str(root), 0, 100).encode(), utf16=False) == OK
    msg = bytearray(FcopyWrite(0, b"x" * 10).encode())
    struct.pack_into("<I", msg, 48, 10000)  # size beyond DATA_FRAGMENT
    assert service.handle(bytes(msg), utf16=False) == FAIL
    msg2 = bytearray(FcopyWrite(0, b"x" * 10).encode()[:60])  # claims 10, carries 8
    assert service.handle(bytes(msg2), utf16=False) == FAIL
    assert tree(root) == []
    # The daemon still serves the next copy.
    assert set(send_file(service, str(root), "g", b"fine")) == {OK}


@pytest.mark.parametrize("utf16", [False, True], ids=["legacy", "uio"])
def test_resends_and_gaps_land_like_pwrite(service, root, utf16):
    """The host resends a fragment and skips ahead: the file is what pwrite at each
    offset gives (holes read as zeros), the sha256 is the file's, the record counts."""

    def req(message) -> int:
        return service.handle(message.encode(utf16=utf16), utf16=utf16)

    assert req(FcopyStart("f", str(root), 0, 20)) == OK
    assert req(FcopyWrite(0, b"0123456789")) == OK
    assert req(FcopyWrite(0, b"0123456789")) == OK
    assert req(FcopyWrite(5, b"ABCDE")) == OK
    assert req(FcopyWrite(15, b"vwxyz")) == OK
    assert req(FcopyWrite(3, b"")) == OK
    assert req(FcopyComplete()) == OK
    expected = b"01234ABCDE" + bytes(5) + b"vwxyz"
    assert (root / "f").read_bytes() == expected
    record = service.recent[-1]
    assert record["result"] == "ok" and (record["gaps"], record["overlaps"]) == (1, 2)
    assert record["sha256"] == hashlib.sha256(expected).hexdigest()
    assert record["size"] == 20


def test_complete_short_of_file_size_replaces_nothing(service, root):
    (root / "f").write_bytes(b"old")
    assert service.handle(FcopyStart("f", str(root), OVER_WRITE, 20).encode(), utf16=False) == OK
    assert service.handle(FcopyWrite(10, b"0123456789"[:9]).encode(), utf16=False) == OK
    assert service.handle(FcopyComplete().encode(), utf16=False) == FAIL
    assert tree(root) == ["f"] and (root / "f").read_bytes() == b"old"
    assert service.recent[-1]["result"] == "incomplete"


def test_in_order_copy_is_hashed_without_reading_the_file_back(service, root, monkeypatch):
    def no_pread(*args):
        raise AssertionError("the in-order path read the file back")

    monkeypatch.setattr(os, "pread", no_pread)
    data = os.urandom(3 * DATA_FRAGMENT + 5)
    assert set(send_file(service, str(root), "f", data)) == {OK}
    assert service.recent[-1]["sha256"] == hashlib.sha256(data).hexdigest()


def test_cancel_mid_transfer(service, root):
    assert service.handle(FcopyStart("f", str(root), 0, 20).encode(), utf16=False) == OK
    assert service.handle(FcopyWrite(0, b"0123456789").encode(), utf16=False) == OK
    assert service.handle(FcopyCancel().encode(), utf16=False) == OK
    assert tree(root) == []
    assert service.recent[-1]["result"] == "cancelled"


def test_already_exists_and_overwrite(service, root):
    (root / "f").write_bytes(b"old")
    assert send_file(service, str(root), "f", b"new", flags=0) == [HvStatus.HV_ERROR_ALREADY_EXISTS]
    assert (root / "f").read_bytes() == b"old"
    assert set(send_file(service, str(root), "f", b"new", flags=OVER_WRITE)) == {OK}
    assert (root / "f").read_bytes() == b"new"


def test_unknown_operation_and_garbage(service, root):
    assert service.handle(struct.pack("<I", 9) + bytes(32), utf16=False) == FAIL
    assert service.handle(b"\x00", utf16=False) == FAIL
    bad_utf8 = bytearray(FcopyStart("f", str(root), 0, 1).encode())
    bad_utf8[36] = 0xFF
    assert service.handle(bytes(bad_utf8), utf16=False) == FAIL
    assert set(send_file(service, str(root), "ok", b"1")) == {OK}


def test_empty_file(service, root):
    assert send_file(service, str(root), "empty", b"") == [OK, OK]
    assert (root / "empty").read_bytes() == b""


def test_max_file_size(service, root):
    assert send_file(service, str(root), "big", b"", flags=0) == [OK, OK]
    status = service.handle(FcopyStart("huge", str(root), 0, (1 << 24) + 1).encode(), utf16=False)
    assert status == FAIL
    assert tree(root) == ["big"]


def test_abort_on_channel_loss(service, root):
    assert service.handle(FcopyStart("f", str(root), 0, 20).encode(), utf16=False) == OK
    assert service.handle(FcopyWrite(0, b"0123456789").encode(), utf16=False) == OK
    service.abort("device reopened")
    assert tree(root) == []
    assert service.recent[-1]["result"] == "aborted"


def test_published_state(service, root, tmp_path):
    paths = Paths(run=str(tmp_path / "run"))
    service.handle(FcopyStart("f", str(root), 0, 20).encode(), utf16=False)
    service.handle(FcopyWrite(0, b"0123456789").encode(), utf16=False)
    service.tick()
    doc = read_state(paths, "fcopy")
    assert doc["state"] == "receiving"
    assert doc["details"]["in_progress"]["bytes_done"] == 10
    assert doc["details"]["in_progress"]["name"] == f"{root}/f"
    service.handle(FcopyCancel().encode(), utf16=False)
    doc = read_state(paths, "fcopy")
    assert doc["details"]["in_progress"] is None
    assert doc["details"]["recent_transfers"][-1]["result"] == "cancelled"


# -- IC framing (UIO) ------------------------------------------------------------


def ic_packet(body: bytes, msgtype: int = IcMsgType.FCOPY) -> bytes:
    header = IcHeader(
        0,
        20 + len(body),
        IcVersion(3, 0),
        msgtype,
        IcVersion(1, 1),
        len(body),
        0,
        3,
        ICMSG_REQUEST_FLAGS,
    )
    return header.encode() + body


def test_ic_negotiate_exactly_like_the_kernel(service):
    req = build_negotiate_request(
        [IcVersion(1, 0), IcVersion(3, 0)], [IcVersion(1, 0), IcVersion(1, 1)]
    )
    reply = ic_reply(service, req)
    assert len(reply) == len(req)
    status, fw, srv = parse_negotiate_response(reply)
    assert (status, fw, srv) == (OK, FCOPY_FW_VERSIONS[0], FCOPY_SRV_VERSIONS[0])
    assert reply[25] == 5
    bad = build_negotiate_request([IcVersion(1, 0)], [IcVersion(1, 1)])
    status, fw, srv = parse_negotiate_response(ic_reply(service, bad))
    assert status == FAIL and fw is None


def test_ic_fcopy_round_trip(service, root):
    data = b"over the ring"
    for body in (
        FcopyStart("ring 🎉.txt", str(root), 0, len(data)).encode(utf16=True),
        FcopyWrite(0, data).encode(),
        FcopyComplete().encode(),
    ):
        pkt = ic_packet(body) + bytes(4)  # senders pad to 8 bytes
        reply = ic_reply(service, pkt)
        assert len(reply) == len(pkt) and reply[25] == 5
        assert IcHeader.decode(reply).status == OK
    assert (root / "ring 🎉.txt").read_bytes() == data


def test_ic_bad_packets_answered(service):
    assert ic_reply(service, b"short") is None
    reply = ic_reply(service, ic_packet(bytes(8), msgtype=IcMsgType.KVPEXCHANGE))
    assert IcHeader.decode(reply).status == FAIL
    reply = ic_reply(service, ic_packet(b"\x01"))  # fcopy body under 4 bytes
    assert IcHeader.decode(reply).status == FAIL
    # A lone surrogate in a UTF-16 name is refused, not mangled.
    start = bytearray(FcopyStart("x", "/tmp", 0, 1).encode(utf16=True))
    start[36:38] = b"\x00\xd8"
    assert IcHeader.decode(ic_reply(service, ic_packet(bytes(start)))).status == FAIL


def test_disk_full_mid_transfer(service, root, monkeypatch):
    import errno

    assert service.handle(FcopyStart("f", str(root), 0, 30).encode(), utf16=False) == OK
    assert service.handle(FcopyWrite(0, b"0123456789").encode(), utf16=False) == OK

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    # Fragments are written behind their reply: the one that does not fit is
    # reported on the next request, and every later WRITE/COMPLETE of the transfer
    # gets the same status.
    monkeypatch.setattr(os, "pwrite", full)
    status = service.handle(FcopyWrite(10, b"0123456789").encode(), utf16=False)
    assert status == HvStatus.HV_ERROR_DISK_FULL
    monkeypatch.undo()
    full_ = HvStatus.HV_ERROR_DISK_FULL
    assert service.handle(FcopyWrite(20, b"0123456789").encode(), utf16=False) == full_
    assert service.handle(FcopyComplete().encode(), utf16=False) == full_
    # A new transfer starts clean.
    assert set(send_file(service, str(root), "g", b"fits")) == {OK}
    (root / "g").unlink()
    assert tree(root) == []
    assert service.recent[-2]["result"] == "HV_ERROR_DISK_FULL"


def test_last_fragment_failure_fails_complete(service, root, monkeypatch):
    import errno

    assert service.handle(FcopyStart("f", str(root), 0, 10).encode(), utf16=False) == OK
    assert service.handle(FcopyWrite(0, b"0123456789").encode(), utf16=False) == OK
    monkeypatch.setattr(os, "pwrite", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    assert service.handle(FcopyComplete().encode(), utf16=False) == FAIL
    assert tree(root) == []


def test_write_before_reply_reports_its_own_failure(service, root, monkeypatch):
    """The device loops write an accepted fragment before answering it
    (accept + write_now): a failure goes back on that WRITE itself, and every later
    WRITE/COMPLETE of the transfer repeats it."""
    import errno

    assert service.handle(FcopyStart("f", str(root), 0, 30).encode(), utf16=False) == OK
    first = bytearray(FcopyWrite(0, b"0123456789").encode())
    assert service.accept(memoryview(first), len(first))
    assert service.write_now() == OK
    monkeypatch.setattr(
        os, "pwrite", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    second = bytearray(FcopyWrite(10, b"0123456789").encode())
    assert service.accept(memoryview(second), len(second))
    full = HvStatus.HV_ERROR_DISK_FULL
    assert service.write_now() == full
    monkeypatch.undo()
    third = bytearray(FcopyWrite(20, b"0123456789").encode())
    assert not service.accept(memoryview(third), len(third))  # the transfer failed
    assert service.handle(bytes(third), utf16=False) == full
    assert service.handle(FcopyComplete().encode(), utf16=False) == full
    assert tree(root) == []
    assert service.recent[-1]["result"] == "HV_ERROR_DISK_FULL"
    assert service.recent[-1]["size"] == 10


def test_ic_write_failure_answered_on_that_packet(service, root, monkeypatch):
    import errno

    start = FcopyStart("f", str(root), 0, 20).encode(utf16=True)
    assert IcHeader.decode(ic_reply(service, ic_packet(start))).status == OK
    write = ic_packet(FcopyWrite(0, b"0123456789").encode())
    reply = ic_reply(service, write)
    assert IcHeader.decode(reply).status == OK
    # The response is the request with status and flags set, as before.
    assert len(reply) == len(write) and reply[28:] == write[28:]
    monkeypatch.setattr(os, "pwrite", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    reply = ic_reply(service, ic_packet(FcopyWrite(10, b"0123456789").encode()))
    assert IcHeader.decode(reply).status == FAIL
    monkeypatch.undo()
    reply = ic_reply(service, ic_packet(FcopyComplete().encode()))
    assert IcHeader.decode(reply).status == FAIL
    assert tree(root) == []


def test_write_behind_after_reply(service, root):
    assert service.handle(FcopyStart("f", str(root), 0, 4).encode(), utf16=False) == OK
    assert service.handle(FcopyWrite(0, b"data").encode(), utf16=False) == OK
    service.after_reply()  # the daemon calls this once the reply is sent
    assert service.writer.sha256 == hashlib.sha256(b"data").hexdigest()
    assert service.handle(FcopyComplete().encode(), utf16=False) == OK
    assert (root / "f").read_bytes() == b"data"


def test_errors_published_with_remedy(service, root, tmp_path):
    paths = Paths(run=str(tmp_path / "run"))
    assert service.handle(FcopyStart("passwd", "/etc", 0, 1).encode(), utf16=False) == FAIL
    err = read_state(paths, "fcopy")["last_error"]
    assert "outside the allowed roots" in err["message"]
    assert "hvguestctl fcopy check" in err["remedy"]
    assert set(send_file(service, str(root), "ok", b"ok")) == {OK}
    assert read_state(paths, "fcopy")["last_error"] is None
    # A host-initiated CANCEL is not an error.
    assert service.handle(FcopyStart("c", str(root), 0, 5).encode(), utf16=False) == OK
    assert service.handle(FcopyCancel().encode(), utf16=False) == OK
    assert read_state(paths, "fcopy")["last_error"] is None


def test_start_publishes_the_temporary_name(root, tmp_path):
    settings = FcopySettings(allowed_roots=[str(root)])
    paths = Paths(run=str(tmp_path / "run2"))
    service = FcopyService(settings, StatePublisher("fcopy", paths))
    service.writer.use_tmpfile = False
    assert service.handle(FcopyStart("f", str(root), 0, 5).encode(), utf16=False) == OK
    current = read_state(paths, "fcopy")["details"]["in_progress"]
    assert current["name"] == f"{root}/f"
    assert os.path.basename(current["temp"]).startswith(".hvguest-fcopy.")
    assert os.path.exists(current["temp"])


def test_checksum_can_be_turned_off(root):
    service = FcopyService(FcopySettings(allowed_roots=[str(root)], checksum=False))
    assert set(send_file(service, str(root), "f", b"data")) == {OK}
    assert service.recent[-1]["sha256"] is None
    assert (root / "f").read_bytes() == b"data"


@pytest.mark.parametrize("utf16", [False, True], ids=["legacy", "uio"])
def test_control_characters_in_names_refused_and_logged_escaped(service, root, utf16, caplog):
    start = FcopyStart("x\x1b]0;owned\x07\n[fake] ok\u2028", str(root), CREATE_PATH, 1)
    assert service.handle(start.encode(utf16=utf16), utf16=utf16) == FAIL
    bad_dir = FcopyStart("f", f"{root}/d\x85", CREATE_PATH, 1)
    assert service.handle(bad_dir.encode(utf16=utf16), utf16=utf16) == FAIL
    assert tree(root) == []
    for record in list(service.recent)[-2:]:
        assert record["result"] == "HV_E_FAIL"
        assert "control character" in record["detail"]
        for text in (record["name"], record["detail"]):
            assert not any(c in text for c in "\x1b\x07\n\x85\u2028"), text
    assert "x\\x1b]0;owned\\x07\\x0a[fake] ok\\u2028" in service.recent[-2]["name"]
    for r in caplog.records:
        text = r.getMessage()
        assert not any(c in text for c in "\x1b\x07\n\x85\u2028"), text
