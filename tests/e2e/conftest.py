"""Session fixtures of the end-to-end tier: one fresh Debian 12 root filesystem
(debootstrap) and freshly built packages per test run, all in a temporary
directory that is removed at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import e2elib
import pytest


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("e2e")
    yield path
    shutil.rmtree(path, ignore_errors=True)
    # /run is on disk on some CI machines: leave no empty nspawn bookkeeping behind
    # (each machine's own directory is removed right after it ran; directories
    # still in use by someone else are not empty and stay).
    for leftover in ("/run/systemd/nspawn/propagate", "/run/systemd/nspawn/locks",
                     "/run/systemd/nspawn"):
        with contextlib.suppress(OSError):
            os.rmdir(leftover)


@pytest.fixture(scope="session")
def rootfs(e2e_dir: Path) -> Path:
    """A minimal Debian 12 with systemd, udev, the Python dependencies and the cloud
    kernel, made once per run. HVGUEST_E2E_ROOTFS names a prepared one to copy
    instead (for iterating on the tests; CI always runs debootstrap)."""
    target = e2e_dir / "rootfs"
    prepared = os.environ.get("HVGUEST_E2E_ROOTFS")
    if prepared:
        e2elib.copy_tree(Path(prepared), target)
    else:
        e2elib.debootstrap(target)
    return target


@pytest.fixture(scope="session")
def deb(e2e_dir: Path) -> Path:
    """packaging/build-deb of this checkout (lintian must pass)."""
    return e2elib.build_deb(e2e_dir / "dist")


@pytest.fixture(scope="session")
def rpm(e2e_dir: Path) -> Path:
    """packaging/build-rpm of this checkout (rpmlint must pass)."""
    if not shutil.which("rpmbuild"):
        pytest.skip("needs rpmbuild (apt-get install rpm)")
    return e2elib.build_rpm(e2e_dir / "dist-rpm")


@pytest.fixture
def scratch_root(rootfs: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the session's root filesystem for one scenario."""
    root = tmp_path / "root"
    e2elib.copy_tree(rootfs, root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def hyperv_daemons_deb(e2e_dir: Path) -> Path:
    """Debian's hyperv-daemons .deb, from the machine's apt sources."""
    where = e2e_dir / "hyperv-daemons"
    where.mkdir(exist_ok=True)
    proc = e2elib.run(["apt-get", "download", "hyperv-daemons"], timeout=300, cwd=where,
                      check=False)
    found = sorted(where.glob("hyperv-daemons_*.deb"))
    if not found:
        pytest.skip(f"cannot download Debian's hyperv-daemons: {proc.stderr.strip()[-300:]}")
    return found[-1]
