"""``hvguest-sim``: run the simulated kernel + host, or talk to a running one."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from hvguest.errors import HvGuestError


def _serve(args: argparse.Namespace) -> int:
    from hvguest.sim.server import ServeOptions, SimServer

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.frontend == "cuse" and command:
        print("hvguest-sim serve: --frontend cuse runs no daemon command", file=sys.stderr)
        return 2
    if args.drive_installed and args.frontend != "cuse":
        print("hvguest-sim serve: --drive-installed goes with --frontend cuse", file=sys.stderr)
        return 2
    if args.frontend == "fuse" and not command:
        print("hvguest-sim serve: give the daemon command after --", file=sys.stderr)
        return 2
    loops = []
    for spec in args.loop_fs:
        parts = spec.split(":")
        if len(parts) != 3:
            print(f"--loop-fs {spec!r}: expected IMAGE:FSTYPE:MOUNTPOINT", file=sys.stderr)
            return 2
        loops.append((parts[0], parts[1], parts[2]))
    opts = ServeOptions(
        command=command,
        control=args.control,
        services=tuple(s for s in args.services.split(",") if s),
        fcopy=args.fcopy,
        loop_filesystems=loops,
        network=args.network,
        timeout_scale=args.timeout_scale,
        uio_ring_size=int(args.uio_ring_size, 0),
        uio_prebound=not args.uio_unbound,
        frontend=args.frontend,
        drive_installed=args.drive_installed,
        dev_root=args.dev_root,
    )
    server = SimServer(opts)
    import signal

    if args.exit_with_parent:
        # The test process that started us may die without closing us: stop then too.
        from hvguest.sim.netns import set_pdeathsig

        set_pdeathsig(signal.SIGTERM)
        if os.getppid() != args.exit_with_parent:
            return 1

    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.serve_forever()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hvguest-sim", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="simulate kernel + host around a daemon command")
    s.add_argument("--control", required=True, help="control socket path")
    s.add_argument("--services", default="kvp", help="comma list of kvp,vss,fcopy")
    s.add_argument("--fcopy", choices=("legacy", "uio"), default="legacy")
    s.add_argument("--loop-fs", action="append", default=[], metavar="IMAGE:FSTYPE:MOUNTPOINT")
    s.add_argument("--network", dest="network", action="store_true", default=True)
    s.add_argument("--no-network", dest="network", action="store_false")
    s.add_argument("--timeout-scale", type=float, default=1.0)
    s.add_argument("--uio-ring-size", default="0x5000", help="per-direction ring bytes")
    s.add_argument("--uio-unbound", action="store_true",
                   help="start with uio_hv_generic not bound (until something writes new_id,"
                        " e.g. hvguest-uio-bind)")
    s.add_argument("--frontend", choices=("fuse", "cuse"), default="fuse",
                   help="fuse: sandbox the daemon command with FUSE devices; cuse: create "
                   "real /dev/vmbus/hv_* character devices and run no daemon (test VMs)")
    s.add_argument("--drive-installed", action="store_true",
                   help="with --frontend cuse: let the installed hvguest daemons take the "
                   "devices (otherwise hvguest's udev rules ignore them)")
    s.add_argument("--dev-root", metavar="DIR",
                   help="rootless: serve DIR/vmbus/hv_* as SOCK_SEQPACKET sockets and run "
                   "the daemon as a plain process (hvguest daemons with --dev-root DIR)")
    s.add_argument("--log", help="log file")
    s.add_argument("--exit-with-parent", type=int, metavar="PID", default=0,
                   help="stop when process PID (our parent) exits")
    s.add_argument("command", nargs=argparse.REMAINDER, help="-- DAEMON COMMAND...")
    s.set_defaults(func=_serve)

    for name in ("kvp", "vss", "fcopy"):
        c = sub.add_parser(name, help=f"{name} host requests to a running simulator")
        c.add_argument("--control", required=True)
        cs = c.add_subparsers(dest="action", required=True)
        if name == "kvp":
            a = cs.add_parser("set")
            a.add_argument("pool", type=int)
            a.add_argument("key")
            a.add_argument("value")
            a.add_argument("--type", default="REG_SZ", choices=("REG_SZ", "REG_U32", "REG_U64"))
            for act in ("get", "delete"):
                a = cs.add_parser(act)
                a.add_argument("pool", type=int)
                a.add_argument("key")
            a = cs.add_parser("list")
            a.add_argument("pool", type=int)
        elif name == "vss":
            for act in ("freeze", "thaw", "hot-backup"):
                cs.add_parser(act)
        else:
            a = cs.add_parser("send")
            a.add_argument("src")
            a.add_argument("destdir")
            a.add_argument("--name")
            a.add_argument("--overwrite", action="store_true")
            a.add_argument("--create-path", action="store_true")
        c.set_defaults(func=_run_client)

    d = sub.add_parser("demo", help="play a short host scenario against the daemons")
    d.add_argument("--workdir", default=None, metavar="DIR",
                   help="keep the files here: DIR must not exist; it is created (mode 0700)")
    d.add_argument("--reference", action="store_true", help="use the reference C daemons")
    d.set_defaults(func=_demo)
    return p


def _status(code: int | None) -> str:
    from hvguest.wire.status import status_name

    return "no reply" if code is None else status_name(code)


def _run_client(args: argparse.Namespace) -> int:
    import os

    from hvguest.sim.client import SimClient

    sim = SimClient(args.control)
    try:
        if args.cmd == "kvp":
            if args.action == "set":
                value: str | int = args.value if args.type == "REG_SZ" else int(args.value)
                st = sim.kvp_set(args.pool, args.key, value, args.type)
                print(_status(st))
            elif args.action == "get":
                st, val = sim.kvp_get(args.pool, args.key)
                print(val if st == 0 else _status(st))
            elif args.action == "delete":
                st = sim.kvp_delete(args.pool, args.key)
                print(_status(st))
            else:
                for k, v in sim.kvp_enumerate_all(args.pool):
                    print(f"{k}={v}")
                st = 0
        elif args.cmd == "vss":
            if args.action == "hot-backup":
                st, flags = sim.vss_hot_backup()
                print(f"{_status(st)} flags={flags}")
            else:
                st = sim.vss_freeze() if args.action == "freeze" else sim.vss_thaw()
                print(_status(st))
        else:
            flags = (1 if args.overwrite else 0) | (2 if args.create_path else 0)
            name = args.name or os.path.basename(args.src)
            st = sim.fcopy_send(args.src, args.destdir, name, flags)
            print(_status(st))
        return 0 if st == 0 else 1
    finally:
        sim.close()


def _demo(args: argparse.Namespace) -> int:
    from hvguest.sim import demo

    return demo.main(workdir=args.workdir, reference=args.reference)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "log", None):
        logging.basicConfig(filename=args.log, level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except HvGuestError as exc:
        print(f"hvguest-sim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
