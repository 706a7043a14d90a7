"""Run a command (the daemon under test) with simulated devices at their real paths.

The command runs in private mount, UTS, IPC and network namespaces on an overlay root
(lower: the machine's ``/``; upper: a tmpfs), so every write it makes, even onto
``/etc/passwd``, stays in memory. It gets a fresh ``/proc`` and ``/sys``, a tmpfs
``/dev`` with the usual nodes and a ``/dev/log`` socket the parent reads, a tmpfs
``/run``, the FUSE device servers mounted at e.g. ``/dev/vmbus``, optional loop
filesystems, fake sysfs entries and a fixed test network.

The namespaces are built by a short-lived helper (``python -m hvguest.sim.netns``) that
execs the command once the parent has confirmed; its pid is the command's pid. The FUSE
servers stay in the parent: ``start()``, ``wait()``, ``exec()`` and ``stop()`` call their
``process()`` while they wait, and otherwise the caller's select loop must.

The command gets PR_SET_PDEATHSIG(SIGKILL): it dies with the thread that called
``start()``, so start sandboxes from a thread that outlives them (normally the main one).

The parent keeps the sandbox's namespaces open, so ``exec()`` (e.g. ``fsfreeze -u``)
works even after the command exited; ``stop()`` thaws every loop filesystem, ends the
command and anything else left in the sandbox, drops the namespaces and detaches the
loop devices.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvguest.errors import HvGuestError

if TYPE_CHECKING:
    from hvguest.sim.fuse import FuseDeviceServer

log = logging.getLogger(__name__)


class SandboxError(HvGuestError):
    """The sandbox could not be set up, or was asked something unsafe."""


@dataclass
class LoopFs:
    """A filesystem image attached to a loop device and mounted inside the sandbox only."""

    image: str
    fstype: str
    mountpoint: str


@dataclass(frozen=True)
class SysLink:
    """A symbolic link in the fake sysfs tree (``fake_sys`` value)."""

    target: str


@dataclass(frozen=True)
class SysDir:
    """An empty directory in the fake sysfs tree (``fake_sys`` value)."""


@dataclass(frozen=True)
class SysBind:
    """A file or directory of the machine bind-mounted into the fake sysfs tree, e.g. the
    tmpfs file backing a simulated ring (``fake_sys`` value). It must live on a tmpfs:
    a bind from a disk shows that disk's device as a rw mount (a VSS daemon would freeze
    it), and the sandbox refuses to start."""

    source: str


@dataclass
class SandboxSpec:
    command: list[str]
    # (server, path): a path naming one of the server's files ("/dev/uio0") binds that
    # file there; any other path ("/dev/vmbus") mounts the whole server as a directory.
    fuse_mounts: list[tuple[FuseDeviceServer, str]] = field(default_factory=list)
    # Paths relative to /sys, e.g. "bus/vmbus/devices/<id>/class_id": file contents,
    # SysLink or SysDir. Their top directories (bus, class...) become tmpfs with the real
    # entries bind-mounted back.
    fake_sys: dict[str, str | bytes | SysLink | SysDir | SysBind] = field(default_factory=dict)
    loop_filesystems: list[LoopFs] = field(default_factory=list)
    # A tmpfs over /sys/dev/block, so the reference VSS daemon does not skip loop devices.
    hide_loop_markers: bool = True
    network: bool = False
    env: dict[str, str] | None = None
    cwd: str = "/"
    stdout: str | None = None
    stderr: str | None = None
    # Where the (empty, host-side) mount point of the sandbox's tmpfs is made; default
    # the system's temporary directory. Removed by stop().
    workdir: str | None = None


def _popen_to_files(
    args: list[str],
    *,
    pass_fds: Sequence[int],
    stdout: str | None,
    stderr: str | None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session, stdin from /dev/null, stdout and stderr appended
    to the named files (inherited otherwise). Our copies of the files are closed at
    once: the child keeps its own."""
    out = open(stdout, "ab") if stdout else None  # noqa: SIM115
    err = open(stderr, "ab") if stderr else None  # noqa: SIM115
    try:
        return subprocess.Popen(
            args,
            pass_fds=pass_fds,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    finally:
        for fh in (out, err):
            if fh is not None:
                fh.close()


class Sandbox:
    """One command in its own namespaces; a context manager that stops it on exit."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self._proc: subprocess.Popen[bytes] | None = None
        self._base = ""
        self._spec_path = ""
        self._syslog_sock: socket.socket | None = None
        self._syslog_lines: list[str] = []
        self._ns_fds: dict[str, int] = {}  # namespace type -> fd held by the parent
        self._peer_ns: int | None = None
        self._loops: list[str] = []
        self._stragglers: list[subprocess.Popen[bytes]] = []
        self._returncode: int | None = None
        self._cleaned = False

    # -- lifecycle --------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise SandboxError("sandbox not started")
        return self._proc.pid

    @property
    def root(self) -> str:
        """The sandbox's root seen from outside (valid while the command runs)."""
        return f"/proc/{self.pid}/root"

    @property
    def loop_devices(self) -> list[str]:
        return list(self._loops)

    def start(self, timeout: float = 30) -> None:
        if self._proc is not None:
            raise SandboxError("sandbox already started")
        if os.geteuid() != 0:
            raise SandboxError("the sandbox needs root (namespaces and mounts)")
        self._validate()
        try:
            self._launch(timeout)
        except BaseException:
            self._kill_and_cleanup()
            raise

    def _validate(self) -> None:
        if not self.spec.command:
            raise SandboxError("empty command")
        for server, path in self.spec.fuse_mounts:
            if server.initialised:
                # The kernel ties a FUSE connection to one mount: a server whose mount
                # has been used cannot be mounted again.
                raise SandboxError(
                    "a FuseDeviceServer serves a single mount; create a new one for each sandbox"
                )
            if not os.path.isabs(path):
                raise SandboxError(f"FUSE mount path {path!r} is not absolute")
        for rel in self.spec.fake_sys:
            parts = rel.strip("/").split("/")
            if not rel or rel.startswith("/") or ".." in parts or len(parts) < 2:
                raise SandboxError(
                    f"fake_sys path {rel!r}: need a relative path below a top directory of /sys"
                )
        for loop in self.spec.loop_filesystems:
            if not os.path.isfile(loop.image) or not os.path.isabs(loop.mountpoint):
                raise SandboxError(
                    f"loop filesystem {loop}: image must exist and the mount point be absolute"
                )

    def _launch(self, timeout: float) -> None:
        self._base = tempfile.mkdtemp(prefix="hvguest-sandbox-", dir=self.spec.workdir)
        self._spec_path = self._base + ".json"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._syslog_sock = sock
        status_r, status_w = os.pipe()
        go_r, go_w = os.pipe()
        fuse: list[dict[str, Any]] = []
        for server, path in self.spec.fuse_mounts:
            name = os.path.basename(path)
            fuse.append(
                {
                    "fd": server.fileno(),
                    "options": server.mount_options(),
                    "path": path,
                    "file": name if name in server.names else None,
                }
            )
        fake: list[list[str]] = []
        for rel, value in sorted(self.spec.fake_sys.items()):
            if isinstance(value, SysLink):
                fake.append([rel, "link", value.target])
            elif isinstance(value, SysDir):
                fake.append([rel, "dir", ""])
            elif isinstance(value, SysBind):
                if not os.path.exists(value.source):
                    raise SandboxError(f"fake_sys {rel!r}: {value.source} does not exist")
                fake.append([rel, "bind", os.path.abspath(value.source)])
            else:
                data = value.encode() if isinstance(value, str) else bytes(value)
                fake.append([rel, "file", base64.b64encode(data).decode()])
        child_spec = {
            "command": self.spec.command,
            "env": self.spec.env if self.spec.env is not None else dict(os.environ),
            "cwd": self.spec.cwd,
            "base": self._base,
            "fuse": fuse,
            "fake_sys": fake,
            "loops": [vars(lp) for lp in self.spec.loop_filesystems],
            "hide_loop_markers": self.spec.hide_loop_markers,
            "network": self.spec.network,
            "syslog_fd": sock.fileno(),
            "status_fd": status_w,
            "go_fd": go_r,
            "ppid": os.getpid(),
        }
        # It carries the environment: private to root, removed once the helper read it.
        fd = os.open(self._spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(child_spec, f)
        try:
            self._proc = _popen_to_files(
                [sys.executable, "-m", "hvguest.sim.netns", self._spec_path],
                pass_fds=[status_w, go_r, sock.fileno()] + [m["fd"] for m in fuse],
                stdout=self.spec.stdout,
                stderr=self.spec.stderr,
            )
        finally:
            os.close(status_w)
            os.close(go_r)
        try:
            self._handshake(status_r, go_w, timeout)
        finally:
            os.close(status_r)
            os.close(go_w)

    def _handshake(self, status_r: int, go_w: int, timeout: float) -> None:
        assert self._proc is not None
        buf = b""
        deadline = time.monotonic() + timeout
        released = False
        while True:
            if time.monotonic() > deadline:
                raise SandboxError(f"sandbox setup did not finish within {timeout} s")
            if self._pump([status_r], 0.05):
                chunk = os.read(status_r, 65536)
                if not chunk:  # exec closed the pipe, or the helper died
                    break
                buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                word, _, rest = line.decode().partition(" ")
                if word == "loop":
                    self._loops.append(rest)
                elif word == "peer-netns":
                    self._peer_ns = os.open(f"/proc/{self._proc.pid}/fd/{rest}", os.O_RDONLY)
                elif word == "error":
                    raise SandboxError(f"sandbox setup failed: {rest}")
                elif word == "ready":
                    os.unlink(self._spec_path)
                    for ns in ("mnt", "uts", "ipc", "net"):
                        self._ns_fds[ns] = os.open(f"/proc/{self._proc.pid}/ns/{ns}", os.O_RDONLY)
                    os.write(go_w, b"g")
                    released = True
        if not released:
            rc = self._proc.wait(timeout=5)
            raise SandboxError(f"sandbox helper exited ({rc}) before it was ready")
        log.debug("sandbox %d running %s", self._proc.pid, self.spec.command)

    # -- driving the FUSE servers -----------------------------------------------------

    def _servers(self) -> list[FuseDeviceServer]:
        seen: dict[int, FuseDeviceServer] = {}
        for server, _path in self.spec.fuse_mounts:
            seen.setdefault(id(server), server)
        return list(seen.values())

    def _pump(self, fds: Sequence[int], timeout: float) -> list[int]:
        """Wait up to ``timeout`` for ``fds``, serving FUSE requests meanwhile; return the
        ready ones among ``fds``."""
        servers = {}
        for s in self._servers():
            if not s.disconnected:
                servers[s.fileno()] = s
        try:
            ready, _, _ = select.select(list(fds) + list(servers), [], [], timeout)
        except (OSError, ValueError):
            # A server was closed under us: serve nothing, just wait.
            ready, _, _ = select.select(list(fds), [], [], timeout)
        for fd in ready:
            if fd in servers:
                servers[fd].process()
        return [fd for fd in ready if fd in fds]

    def serve(self, seconds: float) -> None:
        """Serve the FUSE servers for ``seconds`` (for callers without their own loop)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._pump([], min(left, 0.1))

    # -- the command ------------------------------------------------------------------

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self._proc is not None
            os.kill(self._proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Wait for the command to exit, serving FUSE meanwhile; None on timeout."""
        if self._proc is None:
            return None
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump([], min(left, 0.02))
        self._returncode = self._proc.returncode
        return self._returncode

    def stop(self, timeout: float = 10) -> int | None:
        """Thaw the loop filesystems, SIGTERM the command and everything ``spawn()``
        started, SIGKILL whatever is left after ``timeout``; clean up. The command's exit
        status (negative: killed by that signal)."""
        if self._proc is None:
            return None
        if not self._cleaned:
            self._thaw_all()
            running = [p for p in [self._proc, *self._stragglers] if p.poll() is None]
            for proc in running:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in running) and time.monotonic() < deadline:
                self._pump([], 0.02)
            for proc in running:
                if proc.poll() is None:
                    proc.kill()
            self.wait(5)
        self._cleanup()
        return self._proc.returncode

    def poll(self) -> int | None:
        """The command's exit status, or None while it runs (reaps it)."""
        return self._proc.poll() if self._proc is not None else None

    def __enter__(self) -> Sandbox:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside the sandbox -----------------------------------------------------------

    def _nsenter(self, cmd: Sequence[str]) -> tuple[list[str], list[int]]:
        if not self._ns_fds:
            raise SandboxError("sandbox not running")
        args = ["nsenter"]
        for ns, opt in (("mnt", "--mount"), ("uts", "--uts"), ("ipc", "--ipc"), ("net", "--net")):
            args.append(f"{opt}=/proc/self/fd/{self._ns_fds[ns]}")
        return args + ["--", *cmd], list(self._ns_fds.values())

    def exec(
        self,
        cmd: list[str],
        timeout: float = 30,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd`` in the sandbox's namespaces and root, serving FUSE meanwhile.

        Raises ``subprocess.TimeoutExpired`` after ``timeout``; the process is killed (one
        stuck in a frozen filesystem is reaped by ``stop()`` after the thaw).
        """
        args, fds = self._nsenter(cmd)
        if env is None:
            env = self.spec.env if self.spec.env is not None else dict(os.environ)
        proc = subprocess.Popen(
            args,
            pass_fds=fds,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        pending = memoryview(input or b"")
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        out: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
        open_fds = set(out)
        stdin_fd: int | None = proc.stdin.fileno()
        os.set_blocking(proc.stdin.fileno(), False)
        if not pending:
            proc.stdin.close()
            stdin_fd = None
        deadline = time.monotonic() + timeout
        while open_fds or proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    self._stragglers.append(proc)
                proc.stdout.close()
                proc.stderr.close()
                raise subprocess.TimeoutExpired(
                    cmd, timeout, b"".join(out[out_fd]), b"".join(out[err_fd])
                )
            if stdin_fd is not None:
                _, writable, _ = select.select([], [stdin_fd], [], 0)
                if writable:
                    try:
                        pending = pending[os.write(stdin_fd, pending) :]
                    except BrokenPipeError:
                        pending = memoryview(b"")
                    if not pending:
                        proc.stdin.close()
                        stdin_fd = None
            for fd in self._pump(list(open_fds), min(left, 0.02)):
                chunk = os.read(fd, 65536)
                if chunk:
                    out[fd].append(chunk)
                else:
                    open_fds.discard(fd)
        proc.stdout.close()
        proc.stderr.close()
        return subprocess.CompletedProcess(
            cmd, proc.returncode, b"".join(out[out_fd]), b"".join(out[err_fd])
        )

    def spawn(
        self,
        cmd: list[str],
        *,
        stdout: str | None = None,
        stderr: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in the sandbox without waiting, e.g. to restart the daemon after
        it exited (its files and the device mounts live on). ``stop()`` ends it."""
        args, fds = self._nsenter(cmd)
        if env is None:
            env = self.spec.env if self.spec.env is not None else dict(os.environ)
        proc = _popen_to_files(args, pass_fds=fds, stdout=stdout, stderr=stderr, env=env)
        self._stragglers.append(proc)
        return proc

    def read_file(self, path: str) -> bytes:
        """A file's content inside the sandbox (works after the command exited, too)."""
        if self.alive():
            with open(self.root + path, "rb") as f:
                return f.read()
        done = self.exec(["cat", "--", path], timeout=10)
        if done.returncode != 0:
            raise FileNotFoundError(path)
        return done.stdout

    def syslog_fileno(self) -> int | None:
        """The sandbox's /dev/log socket, for an event loop that calls ``drain_syslog()``
        when it is readable; None while no sandbox runs."""
        sock = self._syslog_sock
        return None if sock is None else sock.fileno()

    def drain_syslog(self) -> None:
        """Take every message queued on the sandbox's /dev/log now. Callers with their
        own loop do this as messages arrive: an unread datagram queue (10 messages)
        blocks the daemon's syslog() calls and stalls it."""
        sock = self._syslog_sock
        while sock is not None:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, OSError):
                break
            self._syslog_lines.append(data.decode("utf-8", "replace").rstrip("\n\0"))

    def syslog(self) -> list[str]:
        """Every message received on the sandbox's /dev/log so far."""
        self.drain_syslog()
        return list(self._syslog_lines)

    # -- cleanup ----------------------------------------------------------------------

    def _thaw_all(self) -> None:
        for loop in self.spec.loop_filesystems:
            if not self._ns_fds:
                return
            try:
                # FITHAW on a filesystem that is not frozen fails with EINVAL: fine.
                self.exec(["fsfreeze", "--unfreeze", loop.mountpoint], timeout=10)
            except (subprocess.TimeoutExpired, OSError) as e:
                log.warning("thawing %s: %s", loop.mountpoint, e)

    def _sandbox_pids(self) -> list[int]:
        fd = self._ns_fds.get("mnt")
        if fd is None:
            return []
        ino = os.fstat(fd).st_ino
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/mnt").st_ino == ino:
                    pids.append(int(entry))
            except OSError:
                continue
        return pids

    def _kill_and_cleanup(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                log.error("sandbox helper %d does not die", self._proc.pid)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        self._thaw_all()
        # Anything left in the sandbox (the command's children, timed-out exec helpers).
        for _ in range(50):
            pids = self._sandbox_pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._pump([], 0.1)
        for proc in self._stragglers:
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                log.error("process %d in the sandbox does not die", proc.pid)
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                log.error("sandbox command %d does not die", self._proc.pid)
        self.syslog()
        for fd in list(self._ns_fds.values()) + ([self._peer_ns] if self._peer_ns else []):
            os.close(fd)
        self._ns_fds.clear()
        self._peer_ns = None
        if self._syslog_sock is not None:
            self._syslog_sock.close()
            self._syslog_sock = None
        self._detach_loops()
        for path in (self._spec_path,):
            if path and os.path.exists(path):
                os.unlink(path)
        if self._base and os.path.isdir(self._base):
            try:
                os.rmdir(self._base)
            except OSError as e:
                log.warning("removing %s: %s", self._base, e)

    def _detach_loops(self) -> None:
        # The namespace's mounts go away with its last process; a loop device still busy
        # for a moment gets autoclear from LOOP_CLR_FD and detaches on its last close.
        for dev in self._loops:
            subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=10)
        deadline = time.monotonic() + 10
        while self._loops and time.monotonic() < deadline:
            listed = subprocess.run(
                ["losetup", "-a"], capture_output=True, text=True, timeout=10
            ).stdout
            if not any(
                line.startswith(dev + ":") for dev in self._loops for line in listed.splitlines()
            ):
                break
            time.sleep(0.05)
        else:
            if self._loops:
                log.error("loop devices %s still attached", self._loops)
