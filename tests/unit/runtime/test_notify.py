"""sd_notify to a datagram socket in tmp_path; watchdog environment."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from hvguest.notify import notify, watchdog_interval


def test_unset_socket_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_path_socket(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.path.join(str(tmp_path), "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1\nSTATUS=up") is True
        assert sock.recv(100) == b"READY=1\nSTATUS=up"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"hvguest-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("WATCHDOG=1") is True
        assert sock.recv(100) == b"WATCHDOG=1"


def test_nobody_listening_is_false(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(str(tmp_path), "absent"))
    assert notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "abc"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert watchdog_interval() is None


def test_other_families_go_through_libsystemd(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    sent: list[str] = []
    fake = types.ModuleType("systemd.daemon")
    fake.notify = lambda state: sent.append(state) or True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd.daemon", fake)
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify("READY=1") is True
    assert sent == ["READY=1"]


def test_libsystemd_is_loaded_only_for_other_families() -> None:
    # Every daemon imports this module; a unix socket needs no python-systemd.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from hvguest.notify import notify\n"
        "notify('READY=1')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'systemd'))\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": "/nonexistent/notify"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
