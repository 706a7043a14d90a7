"""hvguest-fcopyd's legacy path end to end, rootless: the device is a SOCK_SEQPACKET
socket under a private --dev-root (same one-message-per-read/write semantics as
/dev/vmbus/hv_fcopy) and this test plays the kernel. The daemon runs in a thread
with its real Runtime, transport, role and writer.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading

import pytest

from hvguest.config import load_config_text
from hvguest.daemon import Runtime
from hvguest.daemons.fcopyd import FcopyDaemon, detect_transport, main
from hvguest.paths import Paths
from hvguest.state import read_state
from hvguest.wire.fcopy import (
    CREATE_PATH,
    DATA_FRAGMENT,
    OVER_WRITE,
    FcopyCancel,
    FcopyComplete,
    FcopyStart,
    FcopyWrite,
)
from hvguest.wire.status import HvStatus

OK = HvStatus.HV_S_OK
FAIL = HvStatus.HV_E_FAIL


class FakeKernel:
    """The kernel side of /dev/vmbus/hv_fcopy over a listening socket."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        assert conn.recv(16) == struct.pack("<i", 1)  # registration
        conn.send(struct.pack("<I", 1))  # echo
        self.conn = conn

    def request(self, message: bytes) -> int:
        assert self.conn is not None
        self.conn.send(message)
        reply = self.conn.recv(16)
        assert len(reply) == 4
        return struct.unpack("<I", reply)[0]

    def copy(self, data: bytes, directory: str, name: str, flags: int = 0) -> list[int]:
        statuses = [self.request(FcopyStart(name, directory, flags, len(data)).encode())]
        if statuses[0] != OK:
            return statuses
        for off in range(0, len(data), DATA_FRAGMENT):
            statuses.append(self.request(FcopyWrite(off, data[off : off + DATA_FRAGMENT]).encode()))
        statuses.append(self.request(FcopyComplete().encode()))
        return statuses

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.drop()
        self.listener.close()


@pytest.fixture
def env(tmp_path):
    incoming = tmp_path / "incoming"
    paths = Paths(dev=str(tmp_path / "dev"), sys=str(tmp_path / "sys"), run=str(tmp_path / "run"))
    kernel = FakeKernel(paths.vmbus_device("hv_fcopy"))
    config = load_config_text(f"fcopy:\n  allowed_roots: ['{incoming}']\n")
    runtime = Runtime("hvguest-fcopyd-test")
    daemon = FcopyDaemon(paths, config, runtime, "legacy")
    daemon.prepare()
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            daemon.start()
            result["rc"] = runtime.run()
        except BaseException as exc:  # surfaced by the test
            result["exc"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    kernel.accept()
    yield kernel, incoming, paths
    runtime.stop()
    thread.join(10)
    kernel.close()
    runtime.close()
    assert not thread.is_alive()
    assert "exc" not in result, result.get("exc")


def test_copy_with_sha256(env):
    kernel, incoming, paths = env
    data = os.urandom(8 * 1024 * 1024 + 123)
    assert set(kernel.copy(data, f"{incoming}/новая/目录", "файл 🎉.bin", CREATE_PATH)) == {OK}
    target = incoming / "новая" / "目录" / "файл 🎉.bin"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    doc = read_state(paths, "fcopy")
    assert doc["details"]["recent_transfers"][-1]["sha256"] == hashlib.sha256(data).hexdigest()


def test_robustness_sequence_keeps_serving(env):
    kernel, incoming, _ = env
    assert kernel.request(FcopyWrite(0, b"x").encode()) == FAIL
    assert kernel.request(FcopyComplete().encode()) == FAIL
    assert (
        kernel.request(FcopyStart("passwd", "../../etc", OVER_WRITE | CREATE_PATH, 4).encode())
        == FAIL
    )
    assert kernel.request(FcopyStart("x", "/tmp/../etc", OVER_WRITE, 4).encode()) == FAIL
    big = bytearray(FcopyWrite(0, b"x").encode())
    struct.pack_into("<I", big, 48, 10000)
    assert kernel.request(FcopyStart("f", str(incoming), 0, 10).encode()) == OK
    assert kernel.request(bytes(big)) == FAIL
    assert kernel.request(FcopyStart("g", str(incoming), 0, 10).encode()) == OK
    assert kernel.request(FcopyWrite(0, b"01234").encode()) == OK
    assert kernel.request(FcopyWrite(7, b"789").encode()) == OK  # gap: a hole
    assert kernel.request(FcopyComplete().encode()) == OK
    assert (incoming / "g").read_bytes() == b"01234" + bytes(2) + b"789"
    os.unlink(incoming / "g")
    assert kernel.request(FcopyStart("g", str(incoming), 0, 10).encode()) == OK
    assert kernel.request(FcopyWrite(0, b"01234").encode()) == OK
    assert kernel.request(FcopyComplete().encode()) == FAIL  # short of file_size
    assert kernel.request(FcopyStart("h", str(incoming), 0, 10).encode()) == OK
    assert kernel.request(FcopyWrite(0, b"01234").encode()) == OK
    assert kernel.request(FcopyCancel().encode()) == OK
    assert kernel.request(struct.pack("<I", 77) + bytes(32)) == FAIL
    assert list(incoming.iterdir()) == []
    assert set(kernel.copy(b"still serving", str(incoming), "after")) == {OK}
    assert (incoming / "after").read_bytes() == b"still serving"


def test_device_loss_mid_transfer_leaves_nothing(env):
    kernel, incoming, _ = env
    assert kernel.request(FcopyStart("partial", str(incoming), 0, 100).encode()) == OK
    assert kernel.request(FcopyWrite(0, b"x" * 50).encode()) == OK
    kernel.drop()  # the kernel resets the device (e.g. hv_utils reloaded)
    kernel.accept()  # the daemon re-opens and re-registers
    assert list(incoming.iterdir()) == []
    assert set(kernel.copy(b"again", str(incoming), "partial")) == {OK}
    assert (incoming / "partial").read_bytes() == b"again"


def test_not_offered_exits_1(tmp_path, capsys, monkeypatch):
    # Logging set-up is global; keep it out of the rest of the session.
    monkeypatch.setattr("hvguest.daemons.common.setup_logging", lambda *a, **k: None)
    monkeypatch.setattr("hvguest.daemons.common.set_level", lambda *a, **k: None)
    config = tmp_path / "hvguest.yaml"
    config.write_text("")
    empty = tmp_path / "empty"
    rc = main(
        [
            "--dev-root",
            str(empty),
            "--sys-root",
            str(empty),
            "--run-dir",
            str(tmp_path / "r"),
            "--config",
            str(config),
            "--log-target",
            "stderr",
        ]
    )
    assert rc == 1
    assert "Enable-VMIntegrationService -Name 'Guest Service Interface'" in capsys.readouterr().err


def test_detect_transport(tmp_path):
    paths = Paths(dev=str(tmp_path / "dev"), sys=str(tmp_path / "sys"))
    assert detect_transport(paths) is None
    dev = tmp_path / "sys" / "bus" / "vmbus" / "devices" / "eb765408-105f-49b6-b4aa-c123b64d17d4"
    dev.mkdir(parents=True)
    (dev / "class_id").write_text("{34d14be3-dee4-41c8-9ae7-6b174977c192}\n")
    assert detect_transport(paths) == "uio"
    os.symlink("../../../bus/vmbus/drivers/uio_hv_generic", dev / "driver")
    assert detect_transport(paths) == "uio"
    os.unlink(dev / "driver")
    os.symlink("../../../bus/vmbus/drivers/hv_utils", dev / "driver")
    assert detect_transport(paths) == "legacy"
    os.unlink(dev / "driver")
    (tmp_path / "dev" / "vmbus").mkdir(parents=True)
    (tmp_path / "dev" / "vmbus" / "hv_fcopy").write_bytes(b"")
    assert detect_transport(paths) == "legacy"


def test_restart_sweeps_hidden_temporary_file(tmp_path):
    """A daemon killed mid-transfer on a filesystem without O_TMPFILE leaves its
    hidden temporary file; the next start removes it (its name is in the state)."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    paths = Paths(dev=str(tmp_path / "dev"), run=str(tmp_path / "run"))
    config = load_config_text(f"fcopy:\n  allowed_roots: ['{incoming}']\n")
    first = FcopyDaemon(paths, config, Runtime("a"), "legacy")
    first.service.writer.use_tmpfile = False
    assert first.service.handle(FcopyStart("f", str(incoming), 0, 10).encode(), utf16=False) == OK
    [leftover] = os.listdir(incoming)
    assert leftover.startswith(".hvguest-fcopy.")
    # "killed": nothing is cleaned up; a new instance starts.
    second = FcopyDaemon(paths, config, Runtime("b"), "legacy")
    second.prepare()
    assert os.listdir(incoming) == []
    first.runtime.close()
    second.runtime.close()


def test_start_sweeps_only_our_leftovers_in_the_roots(tmp_path):
    """A crash-left hidden temporary file is removed at start even when the state
    that named it is gone (/run is a tmpfs); a file or link another user gave our
    prefix, and anything else, stays."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    ours = incoming / ".hvguest-fcopy.0123456789ab"
    ours.write_bytes(b"left by a crash")
    theirs = incoming / ".hvguest-fcopy.theirs"
    theirs.write_bytes(b"not ours")
    os.chown(theirs, 65534, 65534)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, incoming / ".hvguest-fcopy.link")
    (incoming / "keep.bin").write_bytes(b"keep")
    paths = Paths(dev=str(tmp_path / "dev"), run=str(tmp_path / "run"))
    config = load_config_text(f"fcopy:\n  allowed_roots: ['{incoming}']\n")
    daemon = FcopyDaemon(paths, config, Runtime("c"), "legacy")
    daemon.prepare()
    assert sorted(os.listdir(incoming)) == [
        ".hvguest-fcopy.link",
        ".hvguest-fcopy.theirs",
        "keep.bin",
    ]
    assert victim.read_bytes() == b"keep"
    daemon.runtime.close()


def test_device_gone_exits_0_and_a_dead_device_costs_no_cpu(tmp_path):
    """The legacy device stops accepting (re-opens fail, counted by the fake kernel's
    listener backlog) and then disappears: the daemon backs off, then exits 0."""
    paths = Paths(dev=str(tmp_path / "dev"), sys=str(tmp_path / "sys"), run=str(tmp_path / "r"))
    kernel = FakeKernel(paths.vmbus_device("hv_fcopy"))
    config = load_config_text(f"fcopy:\n  allowed_roots: ['{tmp_path / 'in'}']\n")
    runtime = Runtime("hvguest-fcopyd-test")
    daemon = FcopyDaemon(paths, config, runtime, "legacy")
    attempts: list[float] = []
    real_open = daemon.device.open

    def counted_open() -> object:
        attempts.append(runtime.clock())
        return real_open()

    daemon.device.open = counted_open  # type: ignore[method-assign]
    result: dict[str, object] = {}

    def serve() -> None:
        daemon.start()
        result["rc"] = runtime.run()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    kernel.accept()
    kernel.listener.close()  # re-opens now fail (ECONNREFUSED), the node stays
    kernel.drop()
    deadline = runtime.clock() + 10
    while len(attempts) < 4 and runtime.clock() < deadline:
        threading.Event().wait(0.05)
    # 1 open, then re-opens 0.1, 0.2, 0.4 s apart: exponential, not a loop.
    gaps = [b - a for a, b in zip(attempts[1:], attempts[2:], strict=False)]
    assert len(attempts) >= 4, attempts
    assert all(g2 > g1 * 1.5 for g1, g2 in zip(gaps, gaps[1:], strict=False)), gaps
    os.unlink(paths.vmbus_device("hv_fcopy"))  # the device is gone
    thread.join(15)
    assert not thread.is_alive() and result.get("rc") == 0
    runtime.close()
