"""The AUTO pool (pool 2): intrinsic items generated from live data (protocol.md §2.5).

Same keys, order and value formats as hv_kvp_daemon, with two fixes: the fully
qualified name never becomes an error text ("getaddrinfo failed: ...") but falls back to
the host name, and its lookup never stalls the daemon (bounded wait at start, refreshed
in the background). Addresses skip the interfaces excluded in the configuration
(containers, bridges) and list primary interfaces first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hvguest.kvp.ipinfo import os_root
from hvguest.kvp.netlink import NetlinkReader
from hvguest.paths import Paths

log = logging.getLogger(__name__)

AUTO_KEYS = (
    "FullyQualifiedDomainName",
    "IntegrationServicesVersion",
    "NetworkAddressIPv4",
    "NetworkAddressIPv6",
    "OSBuildNumber",
    "OSName",
    "OSMajorVersion",
    "OSMinorVersion",
    "OSVersion",
    "ProcessorArchitecture",
)
VALUE_LIMIT = 2047  # bytes before the NUL of a 2048-byte value
ADDRESS_TTL = 1.0  # the host asks for the 10 items in a burst: one netlink dump each burst


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell quoting removed (os-release(5))."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        chars = []
        quote = None
        escape = False
        for ch in value:
            if escape:
                chars.append(ch)
                escape = False
            elif ch == "\\" and quote != "'":
                escape = True
            elif quote is None and ch in "\"'":
                quote = ch
            elif ch == quote:
                quote = None
            else:
                chars.append(ch)
        out[key.strip()] = "".join(chars)
    return out


def os_identity(paths: Paths, sysname: str) -> tuple[str, str, str]:
    """(OSName, OSMajorVersion, OSMinorVersion) as hv_kvp_daemon derives them."""
    root = os_root(paths)
    for path in (
        os.path.join(paths.os_etc, "os-release"),
        os.path.join(root, "usr/lib/os-release"),
    ):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                fields = parse_os_release(f.read())
        except OSError:
            continue
        return fields.get("NAME") or sysname, fields.get("VERSION_ID", ""), ""
    for name in ("SuSE-release", "redhat-release"):
        try:
            with open(os.path.join(paths.os_etc, name), encoding="utf-8", errors="replace") as f:
                lines = [line.rstrip("\n") for line in f.readlines()[:3]]
        except OSError:
            continue
        lines += ["", "", ""]
        return lines[0] or sysname, lines[1], lines[2]
    return sysname, "", ""


# How getaddrinfo words the codec's error (logged when the lookup falls back).
_IDNA_FAILED = "encoding with 'idna' codec failed"


def resolver_name(hostname: str) -> str | bytes:
    """What getaddrinfo is given for ``hostname``: an ASCII name as the bytes the
    "idna" codec would make of it, after the codec's one check on ASCII (no empty or
    over-long label, same UnicodeError); any other name as str, for the codec's full
    conversion. Python passes every str host through that codec, whose first use
    imports stringprep and unicodedata into the daemon for nothing on ASCII names."""
    if not hostname.isascii():
        return hostname
    raw = hostname.encode("ascii")
    *labels, last = raw.split(b".")
    if any(not 0 < len(label) < 64 for label in labels):
        raise UnicodeError(f"{_IDNA_FAILED} (UnicodeError: label empty or too long)")
    if len(last) >= 64:
        raise UnicodeError(f"{_IDNA_FAILED} (UnicodeError: label too long)")
    return raw


def canonical_name(hostname: str) -> str:
    """getaddrinfo(AI_CANONNAME) as hv_kvp_daemon asks it; the host name on failure."""
    try:
        infos = socket.getaddrinfo(
            resolver_name(hostname), None, socket.AF_INET, socket.SOCK_STREAM, 0,
            socket.AI_CANONNAME,
        )
    except (OSError, UnicodeError) as exc:
        log.info("FQDN lookup of %s failed (%s); reporting the host name", hostname, exc)
        return hostname
    for info in infos:
        if info[3]:
            return info[3]
    return hostname


class Fqdn:
    """The fully qualified name, resolved off the loop thread with a bounded wait."""

    def __init__(
        self,
        resolve: Callable[[str], str] | None = None,
        hostname: Callable[[], str] | None = None,
    ) -> None:
        self._resolve = resolve or canonical_name
        self._hostname = hostname or socket.gethostname
        self._lock = threading.Lock()
        self._busy = False
        self.value = ""

    def refresh(self, wait: float = 0.0) -> None:
        """Start a lookup (unless one runs); wait up to ``wait`` s for it."""
        host = self._hostname()
        with self._lock:
            if not self.value:
                self.value = host  # until the lookup answers: never empty, never an error
            if self._busy:
                return
            self._busy = True
        done = threading.Event()

        def work() -> None:
            try:
                name = self._resolve(host) or host
            except Exception:  # pragma: no cover - canonical_name catches lookup errors
                log.exception("FQDN lookup of %s failed", host)
                name = host
            with self._lock:
                self.value = name
                self._busy = False
            done.set()

        threading.Thread(target=work, name="fqdn", daemon=True).start()
        if wait > 0 and not done.wait(wait):
            log.warning(
                "FQDN lookup of %s takes longer than %g s; reporting the host name meanwhile",
                host,
                wait,
            )


@dataclass
class AutoPool:
    """``items()``: the ten (key, value) pairs of pool 2, in hv_kvp_daemon's order.

    ``version``: the protocol version the kernel registered (IntegrationServicesVersion);
    ``exclude``/``rank``: which interfaces' addresses are left out / listed first."""

    paths: Paths
    version: Callable[[], str | None] = field(kw_only=True)
    exclude: Callable[[str], bool] = field(default=lambda name: False, kw_only=True)
    rank: Callable[[str], int] = field(default=lambda name: 0, kw_only=True)
    reader: NetlinkReader = field(default_factory=NetlinkReader, kw_only=True)
    fqdn: Fqdn = field(default_factory=lambda: Fqdn(), kw_only=True)
    clock: Callable[[], float] = field(default=time.monotonic, kw_only=True)

    def __post_init__(self) -> None:
        uname = os.uname()
        self._static = {
            "OSBuildNumber": uname.release,
            "OSVersion": uname.release.split("-", 1)[0],
            "ProcessorArchitecture": uname.machine,
        }
        name, major, minor = os_identity(self.paths, uname.sysname)
        self._static.update(OSName=name, OSMajorVersion=major, OSMinorVersion=minor)
        self._addresses: tuple[str, str] | None = None
        self._addresses_at = 0.0

    def addresses(self) -> tuple[str, str]:
        now = self.clock()
        if self._addresses is None or now - self._addresses_at > ADDRESS_TTL:
            self._addresses = self._collect()
            self._addresses_at = now
        return self._addresses

    def _collect(self) -> tuple[str, str]:
        try:
            snap = self.reader.snapshot()
        except OSError as exc:
            log.warning("cannot read the interface addresses over netlink: %s", exc)
            return "", ""
        names = {link.index: link for link in snap.links}
        order = {link.index: (self.rank(link.name), pos) for pos, link in enumerate(snap.links)}
        v4: list[tuple[tuple[int, int], int, str]] = []
        v6: list[tuple[tuple[int, int], int, str]] = []
        for pos, addr in enumerate(snap.addresses):
            link = names.get(addr.index)
            if link is None or link.loopback or self.exclude(link.name):
                continue
            target = v4 if addr.family == socket.AF_INET else v6
            target.append((order[addr.index], pos, addr.address))
        return _join(sorted(v4)), _join(sorted(v6))

    def items(self) -> list[tuple[str, str]]:
        v4, v6 = self.addresses()
        values = {
            "FullyQualifiedDomainName": self.fqdn.value or socket.gethostname(),
            "IntegrationServicesVersion": self.version() or "Unknown version",
            "NetworkAddressIPv4": v4,
            "NetworkAddressIPv6": v6,
            **self._static,
        }
        return [(key, _fit(values[key])) for key in AUTO_KEYS]


def _join(entries: list[tuple[tuple[int, int], int, str]]) -> str:
    out = ""
    for _rank, _pos, address in entries:
        candidate = out + ";" + address if out else address
        if len(candidate) > VALUE_LIMIT:
            break
        out = candidate
    return out


def _fit(value: str) -> str:
    raw = value.encode("utf-8", "replace")
    if len(raw) <= VALUE_LIMIT:
        return value
    return raw[:VALUE_LIMIT].decode("utf-8", "ignore")
