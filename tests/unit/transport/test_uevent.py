"""parse_uevent on byte strings: kernel datagrams as they come, malformed and hostile
ones (None, never an exception); Receiver drops what the kernel did not send."""

from __future__ import annotations

import errno

import pytest

from hvguest.transport.uevent import DROPPED, MAX_UEVENT, Receiver, parse_uevent

NET_ADD = (b"add@/devices/virtual/net/eth1\0ACTION=add\0DEVPATH=/devices/virtual/net/eth1\0"
           b"SUBSYSTEM=net\0INTERFACE=eth1\0IFINDEX=3\0SEQNUM=4711\0")


def test_a_kernel_net_event() -> None:
    ev = parse_uevent(NET_ADD)
    assert ev is not None
    assert (ev.action, ev.subsystem, ev.sys_name, ev.sys_path) == (
        "add", "net", "eth1", "/sys/devices/virtual/net/eth1")
    assert dict(ev.properties) == {"INTERFACE": "eth1", "IFINDEX": "3", "SEQNUM": "4711"}


def test_sys_root_prefixes_the_devpath() -> None:
    ev = parse_uevent(NET_ADD, "/tmp/sys")
    assert ev is not None and ev.sys_path == "/tmp/sys/devices/virtual/net/eth1"


def test_vmbus_bind_and_move() -> None:
    bind = (b"bind@/devices/LNXSYSTM:00/VMBUS:00/f8b3781b\0ACTION=bind\0"
            b"DEVPATH=/devices/LNXSYSTM:00/VMBUS:00/f8b3781b\0SUBSYSTEM=vmbus\0"
            b"DRIVER=hv_utils\0MODALIAS=vmbus:3026\0")
    ev = parse_uevent(bind)
    assert ev is not None and ev.action == "bind" and ev.properties["DRIVER"] == "hv_utils"
    move = (b"move@/devices/virtual/net/enp1s0\0ACTION=move\0DEVPATH=/devices/virtual/net/enp1s0"
            b"\0SUBSYSTEM=net\0DEVPATH_OLD=/devices/virtual/net/eth1\0INTERFACE=enp1s0\0")
    ev = parse_uevent(move)
    assert ev is not None and ev.sys_name == "enp1s0"


def test_without_trailing_nul_and_with_a_value_holding_equals() -> None:
    ev = parse_uevent(b"change@/devices/x\0ACTION=change\0DEVPATH=/devices/x\0SUBSYSTEM=ptp\0"
                      b"MODALIAS=a=b")
    assert ev is not None and ev.properties["MODALIAS"] == "a=b"


@pytest.mark.parametrize("data", [
    b"",
    b"\0",
    b"garbage",
    # udevd's own format (group 2): never a kernel uevent
    b"libudev\0\xfe\xed\xca\xfe" + bytes(32) + b"ACTION=add\0",
    # header without devpath / fields missing
    b"add@\0ACTION=add\0DEVPATH=\0SUBSYSTEM=net\0",
    b"add@/devices/x\0DEVPATH=/devices/x\0SUBSYSTEM=net\0",
    b"add@/devices/x\0ACTION=add\0SUBSYSTEM=net\0",
    b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0",
    b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=\0",
    # header and fields disagree
    b"add@/devices/x\0ACTION=remove\0DEVPATH=/devices/x\0SUBSYSTEM=net\0",
    b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/y\0SUBSYSTEM=net\0",
    # a field without "=", or with an empty key
    b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=net\0BOGUS\0",
    b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=net\0=v\0",
    # unknown action, bad paths, a subsystem with "/"
    b"explode@/devices/x\0ACTION=explode\0DEVPATH=/devices/x\0SUBSYSTEM=net\0",
    b"add@devices/x\0ACTION=add\0DEVPATH=devices/x\0SUBSYSTEM=net\0",
    b"add@/devices/../../etc\0ACTION=add\0DEVPATH=/devices/../../etc\0SUBSYSTEM=net\0",
    b"add@/devices//x\0ACTION=add\0DEVPATH=/devices//x\0SUBSYSTEM=net\0",
    b"add@/devices/x/\0ACTION=add\0DEVPATH=/devices/x/\0SUBSYSTEM=net\0",
    b"add@/\0ACTION=add\0DEVPATH=/\0SUBSYSTEM=net\0",
    b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=../net\0",
])
def test_malformed_datagrams_are_none(data: bytes) -> None:
    assert parse_uevent(data) is None


def test_oversized_datagram_is_none() -> None:
    assert parse_uevent(NET_ADD + b"X=" + b"y" * MAX_UEVENT + b"\0") is None


def test_undecodable_and_control_bytes_never_raise() -> None:
    # An interface name may hold any byte but "/", ":" and white space.
    name = b"ev\xff\x1b[2Jil"
    data = (b"add@/devices/virtual/net/" + name + b"\0ACTION=add\0DEVPATH=/devices/virtual/net/"
            + name + b"\0SUBSYSTEM=net\0INTERFACE=" + name + b"\0")
    ev = parse_uevent(data)
    assert ev is not None and ev.sys_name == "ev\\xff\x1b[2Jil"
    assert ev.properties["INTERFACE"] == ev.sys_name


def test_later_field_wins_but_must_still_match_the_header() -> None:
    data = (b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=net\0"
            b"DEVPATH=/devices/../../root\0")
    assert parse_uevent(data) is None


class Queue:
    def __init__(self, *items: object) -> None:
        self.items = list(items)
        self.sizes: list[int] = []

    def recvfrom(self, bufsize: int) -> tuple[bytes, object]:
        self.sizes.append(bufsize)
        if not self.items:
            raise BlockingIOError(errno.EAGAIN, "again")
        item = self.items.pop(0)
        if isinstance(item, OSError):
            raise item
        assert isinstance(item, tuple)
        return item


def test_receiver_keeps_only_the_kernels_datagrams() -> None:
    q = Queue((b"forged", (1234, 1)), (b"kernel", (0, 1)), (b"odd", "not an address"))
    r = Receiver(q.recvfrom)
    assert r.next() == DROPPED and r.foreign == 1
    assert r.next() == b"kernel"
    assert r.next() == DROPPED
    assert r.next() is None and r.foreign == 2
    # One byte more than a uevent may be: a longer datagram shows as too long.
    assert set(q.sizes) == {MAX_UEVENT + 1}


def test_receiver_passes_receive_errors_on() -> None:
    r = Receiver(Queue(OSError(errno.ENOBUFS, "No buffer space available")).recvfrom)
    with pytest.raises(OSError) as info:
        r.next()
    assert info.value.errno == errno.ENOBUFS
