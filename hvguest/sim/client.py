"""``SimClient``: start ``hvguest-sim serve`` for a daemon command and drive the host.

Used by the daemon tests and benchmarks::

    with SimClient.start(["/usr/sbin/hv_kvp_daemon", "-n"], workdir=tmp) as sim:
        assert sim.kvp_set(0, "k", "v") == 0
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from hvguest.errors import HvGuestError

HV_S_OK = 0


class SimError(HvGuestError):
    """The simulator failed, refused a request or did not answer in time."""


class SimClient:
    """A connection to a running ``hvguest-sim serve`` (and its owner, if started here)."""

    def __init__(self, control: str, proc: subprocess.Popen[bytes] | None = None,
                 *, timeout: float = 120.0, fcopy: str = "legacy") -> None:
        self.control = control
        self._proc = proc
        self.timeout = timeout
        self.fcopy_mode = fcopy
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(control)
        self._buf = b""
        self._next = 1
        info = self.call("ping")
        self.daemon_pid: int = info["daemon_pid"]
        self.root: str = info["root"]
        self.rootless: bool = bool(info.get("rootless"))
        self.last_steps: list[int | None] = []

    @classmethod
    def start(
        cls,
        command: list[str],
        *,
        services: Sequence[str] = ("kvp",),
        fcopy: str = "legacy",
        loop_filesystems: Sequence[tuple[str, str, str]] = (),
        network: bool = True,
        timeout_scale: float = 1.0,
        workdir: str,
        uio_ring_size: int | None = None,
        uio_bound: bool = True,
        dev_root: str | None = None,
        start_timeout: float = 60.0,
        wait_registered: bool = True,
    ) -> SimClient:
        """Start the simulator around ``command``; by default wait until the daemon has
        registered with every simulated service (SimError if it does not)."""
        os.makedirs(workdir, exist_ok=True)
        control = os.path.join(workdir, "sim.sock")
        log = os.path.join(workdir, "sim.log")
        args = [sys.executable, "-m", "hvguest.sim.cli", "serve", "--control", control,
                "--services", ",".join(services), "--fcopy", fcopy,
                "--timeout-scale", str(timeout_scale), "--log", log]
        if threading.current_thread() is threading.main_thread():
            # PR_SET_PDEATHSIG follows the parent *thread*: only safe from the main one.
            args += ["--exit-with-parent", str(os.getpid())]
        if not network:
            args.append("--no-network")
        if uio_ring_size is not None:
            args += ["--uio-ring-size", hex(uio_ring_size)]
        if not uio_bound:
            args.append("--uio-unbound")
        if dev_root is not None:
            args += ["--dev-root", dev_root]
        for image, fstype, mountpoint in loop_filesystems:
            args += ["--loop-fs", f"{image}:{fstype}:{mountpoint}"]
        args += ["--", *command]
        if os.path.exists(control):
            os.unlink(control)
        with open(os.path.join(workdir, "sim.stderr"), "ab") as err:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise SimError(f"hvguest-sim serve exited with {proc.returncode}; "
                               f"see {workdir}/sim.stderr and {log}")
            if os.path.exists(control):
                try:
                    client = cls(control, proc, fcopy=fcopy)
                except (ConnectionRefusedError, FileNotFoundError):
                    client = None
                if client is not None:
                    if wait_registered:
                        left = max(1.0, deadline - time.monotonic())
                        if not client.call("wait_registered", _wait=left + 10, timeout=left):
                            client.close()
                            raise SimError(f"the daemon did not register within {left:.0f} s"
                                           f" (see {workdir}/sim.stderr)")
                    return client
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise SimError(f"hvguest-sim serve did not start within {start_timeout} s")
            time.sleep(0.05)

    # -- plumbing ----------------------------------------------------------------------
    def call(self, op: str, *, _wait: float | None = None, **args: Any) -> Any:
        """One control request; waits up to ``_wait`` (default ``self.timeout``) seconds."""
        timeout = _wait or self.timeout
        rid = self._next
        self._next += 1
        self._sock.settimeout(timeout)
        self._sock.sendall((json.dumps({"id": rid, "op": op, **args}) + "\n").encode())
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("id") != rid:
                    continue
                if not msg.get("ok"):
                    raise SimError(f"{op}: {msg.get('error')}")
                return msg.get("result")
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError as exc:
                raise SimError(f"{op}: no answer within {timeout} s") from exc
            if not chunk:
                raise SimError(f"{op}: the simulator closed the connection")
            self._buf += chunk

    def __enter__(self) -> SimClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self.call("shutdown", _wait=10)
            except (SimError, OSError):
                pass
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(20)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
        self._sock.close()

    # -- KVP ---------------------------------------------------------------------------
    def kvp_set(self, pool: int, key: str, value: str | int, value_type: str = "REG_SZ") -> int:
        return int(self.call("kvp_set", pool=pool, key=key, value=value,
                             value_type=value_type)["status"])

    def kvp_get(self, pool: int, key: str) -> tuple[int, str]:
        r = self.call("kvp_get", pool=pool, key=key)
        return int(r["status"]), r["fields"].get("value", "") if r["status"] == 0 else ""

    def kvp_delete(self, pool: int, key: str) -> int:
        return int(self.call("kvp_delete", pool=pool, key=key)["status"])

    def kvp_enumerate(self, pool: int, index: int) -> tuple[int, str, str]:
        r = self.call("kvp_enumerate", pool=pool, index=index)
        if r["status"] != 0:
            return int(r["status"]), "", ""
        return 0, r["fields"]["key"], r["fields"]["value"]

    def kvp_enumerate_all(self, pool: int) -> list[tuple[str, str]]:
        r = self.call("kvp_enumerate_all", pool=pool)
        return [(k, v) for k, v in r["items"]]

    def kvp_batch(self, steps: list[dict[str, Any]]) -> list[int | None]:
        """Queue host requests back to back (``{"op": "set", "pool": 0, "key": ...,
        "value": ...}``, ``get``, ``delete``, ``enumerate`` with ``index``); the host
        statuses in order (None where the host got no answer)."""
        wait = max(self.timeout, 30.0 + 0.05 * len(steps))
        result = self.call("kvp_batch", _wait=wait, steps=steps)
        return [None if s is None else int(s) for s in result["statuses"]]

    def kvp_get_ip_info(self, adapter_id: str, addr_family: int = 0) -> tuple[int, dict[str, Any]]:
        r = self.call("kvp_get_ip_info", adapter_id=adapter_id, addr_family=addr_family)
        return int(r["status"]), r["fields"]

    def kvp_set_ip_info(self, adapter_id: str, *, addr_family: int, dhcp_enabled: bool,
                        ip_addr: str, sub_net: str, gate_way: str, dns_addr: str) -> int:
        r = self.call("kvp_set_ip_info", adapter_id=adapter_id, addr_family=addr_family,
                      dhcp_enabled=dhcp_enabled, ip_addr=ip_addr, sub_net=sub_net,
                      gate_way=gate_way, dns_addr=dns_addr)
        return int(r["status"])

    def kvp_raw(self, data: bytes) -> bytes:
        """Put ``data`` on the KVP device as the next request; the daemon's reply, or
        b"" when the kernel failed the transaction (timeout, daemon closed or died)."""
        r = self.call("kvp_raw", data=data.hex())
        return b"" if r is None else bytes.fromhex(r)

    def host_raw(self, service: str, body: bytes) -> tuple[int | None, bytes]:
        """Send an arbitrary IC body from the host; (status, full response payload)."""
        r = self.call("host_raw", service=service, body=body.hex())
        return r["status"], bytes.fromhex(r["fields"].get("payload", ""))

    # -- VSS ---------------------------------------------------------------------------
    def vss_hot_backup(self, flags: int = 0) -> tuple[int, int]:
        r = self.call("vss", what="hot_backup", flags=flags)
        return int(r["status"]), int(r["fields"]["flags"])

    def vss_freeze(self) -> int:
        return int(self.call("vss", what="freeze")["status"])

    def vss_thaw(self) -> int:
        return int(self.call("vss", what="thaw")["status"])

    def vss_raw(self, data: bytes) -> bytes:
        r = self.call("vss_raw", data=data.hex())
        return b"" if r is None else bytes.fromhex(r)

    # -- FCOPY -------------------------------------------------------------------------
    def fcopy_send(self, src_path: str, dest_dir: str, name: str, flags: int = 0,
                   fragment: int = 6144, cancel_after_bytes: int | None = None) -> int:
        """Copy a host file into the guest; the final status (per-step statuses in
        ``last_steps``)."""
        r = self.call("fcopy_send", src=os.path.abspath(src_path), dest_dir=dest_dir,
                      name=name, flags=flags, fragment=fragment,
                      cancel_after_bytes=cancel_after_bytes)
        self.last_steps = r["steps"]
        return int(r["status"]) if r["status"] is not None else -1

    def fcopy_raw(self, data: bytes) -> int:
        """Legacy: ``data`` goes to the daemon as-is, its 4-byte status comes back
        (HV_E_FAIL when the kernel failed the transaction). UIO: ``data`` is the body of
        an IC FCOPY packet; the status in the daemon's response."""
        r = self.call("fcopy_raw", data=data.hex())
        return -1 if r is None else int(r)

    def uio_raw_packet(self, packet: bytes) -> None:
        """UIO: write ``packet`` (descriptor + payload) to the RX ring unchecked."""
        self.call("uio_raw_packet", packet=packet.hex())

    def uio_rescind(self, *, node_opens: bool = False) -> None:
        self.call("uio_rescind", node_opens=node_opens)

    def uio_remove(self) -> None:
        """Rescind, and the device leaves the sandbox's /sys."""
        self.call("uio_remove")

    def uio_corrupt(self, what: str) -> dict[str, int]:
        """``rx_read``, ``rx_write`` (index beyond the data area) or ``tx_full``."""
        return dict(self.call("uio_corrupt", what=what))

    def uio_stats(self) -> dict[str, Any]:
        return dict(self.call("uio_stats"))

    def daemon_exits(self) -> list[int | None]:
        return list(self.call("daemon_exits"))

    # -- kernel events ------------------------------------------------------------------
    def hibernate(self) -> None:
        """Guest suspend + resume: fake THAW/CANCEL to the daemons, states forced READY,
        outstanding host requests lost, channels renegotiated."""
        self.call("hibernate")

    def destroy_device(self, service: str) -> None:
        """Module unload (POLLERR|POLLHUP, EBADF) or, for UIO fcopy, host rescind (EIO)."""
        self.call("destroy", service=service)

    # -- daemon ------------------------------------------------------------------------
    def daemon_alive(self) -> bool:
        return bool(self.call("daemon_alive"))

    def signal_daemon(self, sig: int) -> None:
        self.call("signal", signal=int(sig))

    def restart_daemon(self) -> None:
        self.daemon_pid = int(self.call("restart")["daemon_pid"])
        self.root = f"/proc/{self.daemon_pid}/root"

    def syslog(self) -> list[str]:
        return list(self.call("syslog"))

    def kernel_log(self) -> list[str]:
        return list(self.call("kernel_log"))

    def transcript(self) -> list[dict[str, Any]]:
        return list(self.call("transcript"))

    def state(self) -> dict[str, Any]:
        return dict(self.call("state"))

    def exec(self, cmd: list[str], timeout: float = 30,
             input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd`` inside the sandbox (its namespaces and root). While the daemon
        runs this does not involve the simulator's loop; afterwards the simulator runs
        it in the namespaces it still holds."""
        if self.rootless or self.daemon_alive():
            return subprocess.run(self._nsenter(cmd), input=input, capture_output=True,
                                  timeout=timeout, check=False)
        r = self.call("exec", _wait=timeout + 30, cmd=cmd, timeout=timeout,
                      input=(input or b"").hex())
        return subprocess.CompletedProcess(cmd, r["returncode"], bytes.fromhex(r["stdout"]),
                                           bytes.fromhex(r["stderr"]))

    def spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside the sandbox without waiting (e.g. a writer that blocks
        on a frozen filesystem)."""
        return subprocess.Popen(self._nsenter(cmd), start_new_session=True, **kwargs)

    def _nsenter(self, cmd: list[str]) -> list[str]:
        if self.rootless:
            return cmd  # no sandbox: the daemon shares this machine's view
        if not self.daemon_alive():
            raise SimError("the daemon is not running: no namespaces to enter")
        return ["nsenter", "-t", str(self.daemon_pid), "-m", "-u", "-i", "-n", "-r", "-w",
                "--", *cmd]
