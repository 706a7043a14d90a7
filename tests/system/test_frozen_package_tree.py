"""The emergency thaw with the installed package tree itself on the frozen filesystem.

Each layout (.deb payload, .rpm payload, a venv install) is put on a loop ext4 that
the installed hvguest-vssd freezes; the daemon and its thaw guard are SIGKILLed, and
what the unit runs next (``ExecStopPost=hvguestctl vss thaw --if-frozen``) must thaw
within a few seconds without writing anything (bytecode included) to that
filesystem. Everything runs as systemd runs it: from ``/``, with
PYTHONDONTWRITEBYTECODE removed from the environment, through the installed wrappers.

Layout: in a private mount namespace, a tmpfs-backed overlay over /usr takes the
wrappers; the loop filesystem is bind-mounted at the package's library directory
(/usr/lib/hvguest for the .rpm, /usr/lib/python3/dist-packages/hvguest for the .deb)
and the payload copied onto it. The .deb is tested before its postinst ran
py3compile (no bytecode at all: the window between an upgrade's py3clean and
py3compile). Nothing of this is visible outside the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_vss_fixtures import FakeVssKernel, LoopSet, Writer, in_private_ns, run, thaw_path

pytestmark = [pytest.mark.root, pytest.mark.system, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
OK = 0
FREEZE = 5
# Hang detection only: a thaw that writes to the frozen filesystem never ends.
THAW_DEADLINE = 15.0
LIBDIR = {"deb": "/usr/lib/python3/dist-packages/hvguest", "rpm": "/usr/lib/hvguest"}


def systemd_env() -> dict[str, str]:
    """The environment of a unit: none of this machine's PYTHON* conveniences."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pkgs")
    found: dict[str, Path] = {}
    if shutil.which("dpkg-buildpackage"):
        proc = run(str(REPO / "packaging/build-deb"), str(out / "deb"), timeout=600)
        found["deb"] = Path(proc.stdout.strip().splitlines()[-1])
    if shutil.which("rpmbuild") and shutil.which("rpm2cpio"):
        proc = run(str(REPO / "packaging/build-rpm"), str(out / "rpm"), timeout=600)
        found["rpm"] = Path(proc.stdout.strip().splitlines()[-1])
    return found


def extract(layout: str, package: Path, stage: str) -> None:
    os.makedirs(stage)
    if layout == "deb":
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(package)], stdout=subprocess.PIPE)
        run("tar", "-x", "-C", stage, stdin=tar.stdout)
        assert tar.wait() == 0
    else:
        cpio = subprocess.Popen(["rpm2cpio", str(package)], stdout=subprocess.PIPE)
        run("cpio", "-idm", "--quiet", cwd=stage, stdin=cpio.stdout)
        assert cpio.wait() == 0


def overlay_usr(base: str) -> None:
    """/usr writable in this mount namespace only (upper layer on a tmpfs)."""
    layer = os.path.join(base, "usr-layer")
    os.makedirs(layer)
    run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", layer)
    for d in ("upper", "work"):
        os.makedirs(os.path.join(layer, d))
    run("mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir=/usr,upperdir={layer}/upper,workdir={layer}/work", "/usr")
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" ") for line in f]
    usr = [m for m in mounts if m[4] == "/usr"]
    # Never copy a payload into the machine's real /usr.
    assert usr and usr[-1][usr[-1].index("-") + 1] == "overlay", "no private /usr overlay"


def install_layout(layout: str, loops: LoopSet, package: Path | None) -> tuple[str, str]:
    """The package tree on a fresh loop filesystem; returns (bin dir, loop mountpoint)."""
    fs = loops.make("pkg", size_mb=128)
    if layout == "venv":
        src = os.path.join(loops.base, "src")
        files = run("git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard").stdout.split()
        for name in files:
            if os.path.isfile(REPO / name):
                os.makedirs(os.path.dirname(os.path.join(src, name)) or src, exist_ok=True)
                shutil.copy2(REPO / name, os.path.join(src, name))
        venv = os.path.join(fs.mountpoint, "venv")
        run("/usr/bin/python3", "-m", "venv", "--system-site-packages", venv)
        run(os.path.join(venv, "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "--no-index", src, env=systemd_env(), timeout=300)
        return os.path.join(venv, "bin"), fs.mountpoint
    assert package is not None
    stage = os.path.join(loops.base, "stage")
    extract(layout, package, stage)
    overlay_usr(loops.base)
    os.makedirs(LIBDIR[layout])
    run("mount", "--bind", fs.mountpoint, LIBDIR[layout])
    run("cp", "-a", f"{stage}/usr/.", "/usr/")
    assert os.listdir(fs.mountpoint), "payload not on the loop filesystem"
    return "/usr/bin", fs.mountpoint


def bytecode_files(top: str) -> set[str]:
    return {
        os.path.join(d, n) for d, _s, names in os.walk(top) for n in names if n.endswith(".pyc")
    }


def scenario(layout: str, base: str, package: Path | None) -> dict[str, object]:
    loops = LoopSet(base)
    daemon: subprocess.Popen[bytes] | None = None
    kernel: FakeVssKernel | None = None
    thaw: subprocess.Popen[bytes] | None = None
    result: dict[str, object] = {}
    try:
        bindir, tree = install_layout(layout, loops, package)
        run_dir, etc = os.path.join(base, "run"), os.path.join(base, "etc")
        os.makedirs(os.path.join(etc, "vss.d"))
        with open(os.path.join(etc, "hvguest.yaml"), "w") as f:
            f.write("vss:\n  auto_thaw: 120\n")
        proc_root = loops.fake_proc()  # lists the package tree's filesystem only
        kernel = FakeVssKernel(os.path.join(base, "dev"))
        roots = ["--dev-root", os.path.join(base, "dev"), "--proc-root", proc_root,
                 "--run-dir", run_dir]
        log = open(os.path.join(base, "daemon.log"), "wb")  # noqa: SIM115
        daemon = subprocess.Popen(
            [os.path.join(bindir, "hvguest-vssd"), *roots, "--etc-dir", etc,
             "--lib-dir", os.path.join(base, "lib"), "--config",
             os.path.join(etc, "hvguest.yaml"), "--log-target", "stderr"],
            cwd="/", env=systemd_env(), stdout=log, stderr=log,
        )
        kernel.accept()
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(run_dir, "vss.json")):
            assert time.monotonic() < deadline, "no state published"
            time.sleep(0.05)  # published just after registration
        with open(os.path.join(run_dir, "vss.json")) as f:
            result["guard_state"] = json.load(f)["details"].get("guard", {}).get("state")
        before = bytecode_files(tree)
        status, _flags = kernel.op(FREEZE)
        result["freeze"] = status
        writer = Writer(os.path.join(tree, "probe"))
        result["frozen"] = not writer.done(0.5)
        guard = subprocess.run(["pgrep", "-f", "-P", str(daemon.pid), "hvguest.vss.guard"],
                               capture_output=True, text=True).stdout.split()
        for pid in guard:  # the guard first: killed second, it would thaw at once
            os.kill(int(pid), signal.SIGKILL)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        result["guard_killed"] = len(guard)
        # What the unit's ExecStopPost runs.
        t0 = time.monotonic()
        thaw = subprocess.Popen(
            [os.path.join(bindir, "hvguestctl"), "vss", "thaw", "--if-frozen", *roots],
            cwd="/", env=systemd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            thaw.wait(THAW_DEADLINE)
            result["thaw_seconds"] = round(time.monotonic() - t0, 3)
        except subprocess.TimeoutExpired:
            result["thaw_seconds"] = None  # hung on the frozen filesystem
        result["still_frozen"] = thaw_path(tree)  # True: the thaw did not do it
        out, err = thaw.communicate(timeout=60)
        result["thaw_rc"] = thaw.returncode
        result["thaw_output"] = (out + err).decode(errors="replace")
        result["writer_done"] = writer.done(10)
        result["new_bytecode"] = sorted(bytecode_files(tree) - before)
        log.close()
        with open(os.path.join(base, "daemon.log"), errors="replace") as f:
            result["daemon_log"] = f.read()[-3000:]
        return result
    finally:
        # Never leave anything frozen, whatever failed above.
        for fs in loops.mounted:
            if fs.fstype == "ext4":
                try:
                    thaw_path(fs.mountpoint)
                except OSError:
                    pass
        if thaw is not None and thaw.poll() is None:
            thaw.kill()
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if kernel is not None:
            kernel.close()
        for lib in LIBDIR.values():
            run("umount", "-l", lib, check=False)
        run("umount", "-l", "/usr", check=False)
        loops.cleanup()


@pytest.mark.parametrize("layout", ["deb", "rpm", "venv"])
def test_emergency_thaw_with_the_package_tree_frozen(layout, built, tmp_path):
    if layout != "venv" and layout not in built:
        pytest.skip(f"cannot build the .{layout} here (dpkg-buildpackage / rpmbuild missing)")
    base = str(tmp_path)
    r = in_private_ns(lambda: scenario(layout, base, built.get(layout)), timeout=600)
    report = f"{r.get('thaw_output')}\n--- daemon\n{r.get('daemon_log')}"
    assert r["freeze"] == OK, report
    assert r["frozen"], "the package tree's filesystem was not frozen"
    assert r["thaw_seconds"] is not None, f"the emergency thaw hung\n{r}"
    assert r["still_frozen"] is False, report
    assert r["thaw_rc"] == 0 and ": thawed" in str(r["thaw_output"]), report
    assert r["writer_done"]
    assert r["new_bytecode"] == [], r["new_bytecode"]
    # The guard was running (killed above), so the freeze had its safety net.
    assert r["guard_state"] == "running" and r["guard_killed"] == 1, report
    print(f"{layout}: emergency thaw in {r['thaw_seconds']} s")
