"""A minimal rtnetlink reader: links, addresses and default routes (stdlib only).

hvguest-kvpd answers the host's address questions from the kernel's own tables, read
over NETLINK_ROUTE dumps, not by running ``ip`` or helper scripts. pyroute2 does the same
but costs ~24 MB of resident memory for the three dumps we need, which alone would
exceed the daemon's memory budget; this reader is ~1 ms per dump.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300

IFF_LOOPBACK = 0x8
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 6, 8
IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_PERMANENT = 0x01, 0x08, 0x80
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE, RTA_VIA = 1, 4, 5, 9, 15, 18
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
INFINITY_LIFE_TIME = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_RTNEXTHOP = struct.Struct("=HBBi")


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    mac: str  # upper case, "" if the link has none

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)


@dataclass(frozen=True)
class Address:
    index: int
    family: int  # socket.AF_INET / AF_INET6
    address: str
    prefixlen: int
    flags: int
    valid_lft: int = INFINITY_LIFE_TIME

    @property
    def dynamic(self) -> bool:
        """Leased (DHCP, SLAAC): the kernel will expire it."""
        return self.valid_lft != INFINITY_LIFE_TIME and not self.flags & IFA_F_PERMANENT

    @property
    def netmask(self) -> str:
        if self.family == socket.AF_INET:
            return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefixlen}").netmask)
        return f"/{self.prefixlen}"


@dataclass(frozen=True)
class Route:
    family: int
    gateway: str
    oif: int


@dataclass
class Snapshot:
    links: list[Link] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    default_routes: list[Route] = field(default_factory=list)

    def link(self, index: int) -> Link | None:
        for link in self.links:
            if link.index == index:
                return link
        return None


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + 4 <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        out.setdefault(kind & 0x3FFF, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return out


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _ip(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw)


class NetlinkReader:
    """One NETLINK_ROUTE socket; ``snapshot()`` dumps links, addresses and routes."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
            )
            sock.bind((0, 0))
            sock.settimeout(2.0)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _dump(self, msg_type: int, body: bytes) -> list[tuple[int, bytes]]:
        sock = self._socket()
        self._seq += 1
        seq = self._seq
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        )
        try:
            sock.send(header + body)
            out: list[tuple[int, bytes]] = []
            while True:
                data = sock.recv(65536)
                offset = 0
                while offset + _NLMSGHDR.size <= len(data):
                    length, kind, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                    if length < _NLMSGHDR.size:
                        return out
                    payload = data[offset + _NLMSGHDR.size : offset + length]
                    offset += (length + 3) & ~3
                    if msg_seq != seq:
                        continue
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", payload)
                        if code:
                            raise OSError(-code, os.strerror(-code))
                        return out
                    out.append((kind, payload))
        except OSError:
            self.close()  # a half-read dump would poison the next one
            raise

    def _replies(
        self, request: int, header: struct.Struct, reply: int
    ) -> Iterator[tuple[tuple[Any, ...], bytes]]:
        """The decoded header and the payload of each ``reply`` message of a dump."""
        for kind, payload in self._dump(request, header.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if kind == reply:
                yield header.unpack_from(payload), payload

    def links(self) -> list[Link]:
        links = []
        for header, payload in self._replies(RTM_GETLINK, _IFINFOMSG, RTM_NEWLINK):
            _family, _type, index, flags, _change = header
            attrs = _attrs(payload, _IFINFOMSG.size)
            mac = attrs.get(IFLA_ADDRESS, b"")
            links.append(
                Link(
                    index,
                    _text(attrs.get(IFLA_IFNAME, b"")),
                    flags,
                    ":".join(f"{b:02X}" for b in mac),
                )
            )
        return links

    def addresses(self) -> list[Address]:
        out = []
        for header, payload in self._replies(RTM_GETADDR, _IFADDRMSG, RTM_NEWADDR):
            family, prefixlen, flags, _scope, index = header
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            attrs = _attrs(payload, _IFADDRMSG.size)
            if IFA_FLAGS in attrs:
                (flags,) = struct.unpack("=I", attrs[IFA_FLAGS][:4])
            # IPv4 point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
            raw = attrs.get(IFA_LOCAL) if family == socket.AF_INET else None
            raw = raw or attrs.get(IFA_ADDRESS)
            if not raw:
                continue
            valid = INFINITY_LIFE_TIME
            if IFA_CACHEINFO in attrs and len(attrs[IFA_CACHEINFO]) >= 8:
                _preferred, valid = struct.unpack_from("=II", attrs[IFA_CACHEINFO])
            out.append(Address(index, family, _ip(family, raw), prefixlen, flags, valid))
        return out

    def default_routes(self) -> list[Route]:
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
            for kind, payload in self._dump(RTM_GETROUTE, body):
                if kind != RTM_NEWROUTE:
                    continue
                fam, dst_len, _src, _tos, table, _proto, _scope, rtype, _flags = _RTMSG.unpack_from(
                    payload
                )
                attrs = _attrs(payload, _RTMSG.size)
                if RTA_TABLE in attrs:
                    (table,) = struct.unpack("=I", attrs[RTA_TABLE][:4])
                if dst_len != 0 or table != RT_TABLE_MAIN or rtype != RTN_UNICAST:
                    continue
                oif = struct.unpack("=i", attrs[RTA_OIF][:4])[0] if RTA_OIF in attrs else 0
                if RTA_GATEWAY in attrs:
                    out.append(Route(fam, _ip(fam, attrs[RTA_GATEWAY]), oif))
                elif RTA_MULTIPATH in attrs:
                    out.extend(_nexthops(fam, attrs[RTA_MULTIPATH]))
        return out

    def snapshot(self) -> Snapshot:
        return Snapshot(self.links(), self.addresses(), self.default_routes())


def _nexthops(family: int, data: bytes) -> list[Route]:
    out = []
    offset = 0
    while offset + _RTNEXTHOP.size <= len(data):
        length, _flags, _hops, ifindex = _RTNEXTHOP.unpack_from(data, offset)
        if length < _RTNEXTHOP.size:
            break
        attrs = _attrs(data[offset : offset + length], _RTNEXTHOP.size)
        if RTA_GATEWAY in attrs:
            out.append(Route(family, _ip(family, attrs[RTA_GATEWAY]), ifindex))
        offset += (length + 3) & ~3
    return out
