"""hvguest's daemons under the names of the kernel's reference daemons.

Images, kickstarts, init scripts and Microsoft's validation suite name the programs
of the distributions' Hyper-V packages: ``hv_kvp_daemon``, ``hv_vss_daemon``,
``hv_fcopy_daemon`` and ``hv_fcopy_uio_daemon`` (Debian, Ubuntu, upstream), and
``hypervkvpd``, ``hypervvssd``, ``hypervfcopyd`` (Fedora, RHEL). The packages install
those names in /usr/sbin as entry points of this module, so the running process's
name (``/proc/PID/comm``, what ``pgrep`` matches) is the familiar one, and the units
start the daemons under them.

The upstream options keep their upstream meaning:

* ``-n``, ``--no-daemon``: stay in the foreground.
* ``-h``, ``--help``: print the usage and exit 0.
* ``-d``, ``--debug``, ``--debug-enabled`` (KVP only, as in newer kernels): log
  debug messages.

Without ``-n`` the program detaches from the terminal as the kernel's daemons do
(fork, new session, standard streams on /dev/null, logs to the journal), except when
systemd started it as a notify service (``NOTIFY_SOCKET`` set): then it stays in the
foreground and tells systemd when it is ready, so a unit written either way works.
A bad configuration is reported on the terminal before detaching.

hvguest's own long options (``--config``, ``--log-target``, the root options) are
passed on to the daemon; any other short option is an error (exit status 1, as
upstream).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from hvguest.config import validate_config
from hvguest.paths import Paths

EXIT_CONFIG = 78  # as the daemons exit on a bad configuration (sysexits EX_CONFIG)


@dataclass(frozen=True)
class Program:
    service: str  # kvp / vss / fcopy
    daemon: str  # hvguest's own program name
    summary: str
    debug_flag: bool  # accepts -d/--debug-enabled (newer upstream KVP daemons)


KVP = Program("kvp", "hvguest-kvpd", "Hyper-V Data Exchange (KVP) daemon", True)
VSS = Program("vss", "hvguest-vssd", "Hyper-V VSS (live backup) daemon", False)
FCOPY = Program("fcopy", "hvguest-fcopyd", "Hyper-V Guest Service Interface (file copy) daemon",
                False)

# Every name the packages install in /usr/sbin, and the daemon behind it.
PROGRAMS: dict[str, Program] = {
    "hv_kvp_daemon": KVP,
    "hypervkvpd": KVP,
    "hv_vss_daemon": VSS,
    "hypervvssd": VSS,
    "hv_fcopy_daemon": FCOPY,
    "hv_fcopy_uio_daemon": FCOPY,
    "hypervfcopyd": FCOPY,
}

# Every other long option of the daemons takes a value (--config PATH, the roots,
# --log-target, --lib-dir, --transport): written "--opt VALUE", the value goes along.
_FLAG_OPTIONS = ("--debug", "--help")


class UsageError(Exception):
    pass


@dataclass
class Invocation:
    foreground: bool = False
    debug: bool = False
    help: bool = False
    passed_on: list[str] = field(default_factory=list)


def parse(program: Program, argv: list[str]) -> Invocation:
    """The upstream options of ``argv``; hvguest's long options are passed on."""
    inv = Invocation()
    words = iter(argv)
    for word in words:
        if word == "--":
            inv.passed_on.extend(words)
            break
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            if name == "--no-daemon" and "=" not in word:
                inv.foreground = True
            elif name == "--help" and "=" not in word:
                inv.help = True
            elif name in ("--debug-enabled", "--debug") and "=" not in word and (
                    program.debug_flag or name == "--debug"):
                inv.debug = True
            else:
                inv.passed_on.append(word)
                if name not in _FLAG_OPTIONS and "=" not in word:
                    value = next(words, None)
                    if value is not None:
                        inv.passed_on.append(value)
            continue
        if word.startswith("-") and word != "-":
            for letter in word[1:]:
                if letter == "n":
                    inv.foreground = True
                elif letter == "h":
                    inv.help = True
                elif letter == "d" and program.debug_flag:
                    inv.debug = True
                else:
                    raise UsageError(f"invalid option -- '{letter}'")
            continue
        inv.passed_on.append(word)
    if inv.debug and "--debug" not in inv.passed_on:
        inv.passed_on.append("--debug")
    return inv


def usage(name: str, program: Program) -> str:
    debug = ("  -d, --debug            log debug messages (also --debug-enabled)\n"
             if program.debug_flag else "")
    return (
        f"Usage: {name} [options]\n"
        f"{program.daemon}, the {program.summary}, under this name.\n"
        "Options are:\n"
        "  -n, --no-daemon        stay in foreground, don't daemonize\n"
        f"{debug}"
        "  -h, --help             print this help\n"
        "Without -n the program detaches from the terminal, except when systemd\n"
        "starts it as a notify service (NOTIFY_SOCKET set): then it stays in the\n"
        "foreground. A detached daemon logs to the journal.\n"
        f"The long options of {program.daemon} are accepted too ({program.daemon} --help).\n"
    )


def should_detach(inv: Invocation, environ: dict[str, str] | os._Environ[str]) -> bool:
    """Upstream detaches unless -n; under a notify unit, detaching would lose the
    readiness notification and the main PID, so the daemon stays."""
    return not inv.foreground and not environ.get("NOTIFY_SOCKET")


def config_to_check(passed_on: list[str]) -> str | None:
    """The configuration file the daemon will read, when the arguments say it plainly."""
    for i, word in enumerate(passed_on):
        if word.startswith("--config="):
            return word.split("=", 1)[1]
        if word == "--config" and i + 1 < len(passed_on):
            return passed_on[i + 1]
    if any(w.startswith(("--etc-dir", "--root-dir")) for w in passed_on):
        return None  # the daemon resolves it under the given root
    return Paths().config_file


def detach() -> None:
    """Into the background as daemon(3) does, and out of the caller's directory."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _daemon_main(service: str) -> Callable[[list[str]], int]:
    # Imported on use: each name loads only its own daemon.
    if service == "kvp":
        from hvguest.daemons.kvpd import main as kvp_main

        return kvp_main
    if service == "vss":
        from hvguest.daemons.vssd import main as vss_main

        return vss_main
    from hvguest.daemons.fcopyd import main as fcopy_main

    return fcopy_main


def run(name: str, argv: list[str], *, err: TextIO | None = None,
        out: TextIO | None = None) -> int:
    program = PROGRAMS[name]
    err = err or sys.stderr
    out = out or sys.stdout
    try:
        inv = parse(program, argv)
    except UsageError as exc:
        err.write(f"{name}: {exc}\n{usage(name, program)}")
        return 1
    if inv.help:
        out.write(usage(name, program))
        return 0
    args = list(inv.passed_on)
    if should_detach(inv, os.environ):
        path = config_to_check(args)
        problems = validate_config(path) if path else []
        if problems:
            err.write("".join(f"{program.daemon}: {p}\n" for p in problems))
            return EXIT_CONFIG
        if not any(w.startswith("--log-target") for w in args):
            args += ["--log-target", "journal"]
        err.flush()
        out.flush()
        detach()
    return _daemon_main(program.service)(args)


def _entry(name: str) -> Callable[[], int]:
    def main() -> int:
        return run(name, sys.argv[1:])

    main.__name__ = f"{name}_main"
    return main


hv_kvp_daemon = _entry("hv_kvp_daemon")
hypervkvpd = _entry("hypervkvpd")
hv_vss_daemon = _entry("hv_vss_daemon")
hypervvssd = _entry("hypervvssd")
hv_fcopy_daemon = _entry("hv_fcopy_daemon")
hv_fcopy_uio_daemon = _entry("hv_fcopy_uio_daemon")
hypervfcopyd = _entry("hypervfcopyd")


if __name__ == "__main__":
    # python3 -m hvguest.cli.upstream NAME [options] (the man page generator uses it).
    if len(sys.argv) < 2 or sys.argv[1] not in PROGRAMS:
        sys.stderr.write(f"usage: python3 -m hvguest.cli.upstream {{{','.join(PROGRAMS)}}} ...\n")
        sys.exit(2)
    sys.exit(run(sys.argv[1], sys.argv[2:]))
