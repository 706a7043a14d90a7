"""Resident memory (VmRSS) of each hvguest daemon once it is serving.

    python -m bench rss [--runs N]

kvpd, vssd and fcopyd run under the simulator with the same configuration as
``bench kvp`` (one setting, so the YAML loader is in): each is measured after it
registered and answered one request (a KVP SET, a VSS hot-backup query, a small
file copy). hvguest-heartbeatd has no simulated device: it runs on the simulator's demo VM
tree, mounted on /sys in a private mount namespace (so that it opens its
device-event watcher, as under systemd), and is measured after its first
published state. Each daemon is measured twice: as this checkout runs it (every module
compiled from source at start) and as installed (bytecode written beforehand).
Medians over ``--runs`` starts. Needs root and /dev/fuse.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import rss_mb

TARGET_MB = 18.0
DAEMONS = ("kvp", "vss", "fcopy", "heartbeat")


def _daemon(module: str, config: str) -> list[str]:
    return [sys.executable, "-m", f"hvguest.daemons.{module}", "--log-target", "stderr",
            "--config", config]


def _simulated(service: str, config: str, workdir: str) -> float:
    from hvguest.sim.client import SimClient

    module = {"kvp": "kvpd", "vss": "vssd", "fcopy": "fcopyd"}[service]
    with SimClient.start(_daemon(module, config), services=(service,), network=False,
                         workdir=workdir) as sim:
        if service == "kvp":
            status = sim.kvp_set(0, "bench-rss", "1")
        elif service == "vss":
            status, _ = sim.vss_hot_backup()
        else:
            source = os.path.join(workdir, "small.bin")
            with open(source, "wb") as f:
                f.write(os.urandom(64 << 10))
            status = sim.fcopy_send(source, "/tmp", "bench-rss.bin")
        if status != 0:
            raise RuntimeError(f"{service}: request failed with status {status:#x}")
        rss = rss_mb(sim.daemon_pid)
    if rss is None:
        raise RuntimeError(f"{service}: the daemon is gone")
    return rss


def _heartbeat(config: str, workdir: str) -> float:
    from hvguest.sim.demovm import write_vm_tree

    tree = write_vm_tree(workdir, ("kvp", "vss", "fcopy"))
    # The demo VM's sysfs on /sys in a private mount namespace: the daemon watches
    # device events only on the real /sys path, as under systemd.
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
           'mount --bind "$0" /sys && exec "$@"', tree.sys,
           *_daemon("heartbeatd", config), "--sys-root", "/sys", "--dev-root", tree.dev,
           "--run-dir", tree.run, "--pool-dir", tree.pool_dir, "--etc-dir", tree.etc]
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    with open(os.path.join(workdir, "heartbeatd.stderr"), "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
    try:
        state = os.path.join(tree.run, "heartbeat.json")
        deadline = time.monotonic() + 30
        while not os.path.exists(state):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hvguest-heartbeatd published no state; see {workdir}")
            time.sleep(0.1)
        time.sleep(1.0)  # the first poll's work is done by the time its state is out
        rss = rss_mb(proc.pid)  # unshare and sh exec: the pid is the daemon's
    finally:
        proc.terminate()
        proc.wait(10)
    if rss is None:
        raise RuntimeError("hvguest-heartbeatd is gone")
    return rss


def _bytecode_env(workdir: str) -> dict[str, str]:
    """The environment of an installed daemon: hvguest's modules compiled beforehand
    (packages ship or write bytecode; this checkout runs with PYTHONDONTWRITEBYTECODE,
    so each start compiles every module from source, which leaves a larger heap)."""
    import hvguest

    env = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(workdir, "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    package = os.path.dirname(os.path.abspath(hvguest.__file__))
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    return env


def _measure(name: str, config: str, where: str) -> float:
    os.makedirs(where, exist_ok=True)
    return _heartbeat(config, where) if name == "heartbeat" else _simulated(name, config, where)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench rss", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1, help="starts per daemon (default 1)")
    args = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="bench-rss-")
    config = os.path.join(workdir, "hvguest.yaml")
    with open(config, "w", encoding="ascii") as f:
        f.write("log:\n  level: info\n")
    modes = {"source": dict(os.environ), "bytecode": _bytecode_env(workdir)}
    results: dict[tuple[str, str], list[float]] = {}
    saved = dict(os.environ)
    try:
        # The cache prefix holds no standard library bytecode yet: one unmeasured start
        # of each daemon writes what it imports, as the distribution's packages have.
        os.environ.clear()
        os.environ.update(modes["bytecode"])
        for name in DAEMONS:
            _measure(name, config, os.path.join(workdir, f"{name}-warm-up"))
        for run in range(args.runs):
            for mode, env in modes.items():
                os.environ.clear()
                os.environ.update(env)  # the simulator passes it on to the daemon
                for name in DAEMONS:
                    rss = _measure(name, config, os.path.join(workdir, f"{name}-{mode}-{run}"))
                    results.setdefault((name, mode), []).append(rss)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print(f"{'RSS MB (median)':<22}{'from source':>12}{'with bytecode':>15}"
          f"  target <= {TARGET_MB:g} MB")
    for name in DAEMONS:
        cells = [statistics.median(results[(name, mode)]) for mode in modes]
        print(f"{'hvguest-' + name + 'd':<22}{cells[0]:>12.1f}{cells[1]:>15.1f}")
    return 0
