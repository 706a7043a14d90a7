"""hvguest-direct-keys USER [FINGERPRINT]: sshd's AuthorizedKeysCommand for the
connections of hvguest-direct.socket (its drop-in passes ``%u %f``).

Prints, one per line, the host's keys from KVP pool 0 that pass the strict check
(``hvguest.direct.authorized``), and only when ``direct.authorized_keys_from_host``
is on and USER is ``direct.user``; otherwise nothing. Every use is logged (user,
number of keys, whether the offered key is one of them), and so is every item left
out and why. Nothing but key lines ever reaches stdout, which sshd reads as an
authorized_keys file.

sshd runs it as AuthorizedKeysCommandUser (nobody), after checking that the program
and every directory above it belong to root and are writable by nobody else. It
reads only root's files: /etc/hvguest/hvguest.yaml and the pool file (0644).
Exit 0 also when there is nothing to print; 1 when the configuration or the pool
cannot be read (sshd then uses no key from here).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hvguest.config import load_config
from hvguest.direct.authorized import KEYS_POOL, fingerprint, select_keys
from hvguest.direct.settings import DirectSettings
from hvguest.errors import HvGuestError
from hvguest.journal import JOURNAL_SOCKET
from hvguest.log import setup_logging
from hvguest.roots import add_root_options, paths_from_args
from hvguest.text import printable

log = logging.getLogger("hvguest.direct.keys")
IDENT = "hvguest-direct-keys"
MAX_ARG = 256


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=IDENT, description="Print the Hyper-V host's SSH keys "
                                "from KVP pool 0 for sshd's AuthorizedKeysCommand.")
    p.add_argument("user", help="the user logging in (sshd's %%u)")
    p.add_argument("fingerprint", nargs="?", default="", help="the offered key (sshd's %%f)")
    p.add_argument("--log-target", choices=("auto", "journal", "stderr"), default="auto")
    add_root_options(p, os_etc=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = args.log_target
    if target == "auto":
        # sshd starts this with an empty environment: the journal socket tells.
        target = "journal" if os.path.exists(JOURNAL_SOCKET) else "stderr"
    setup_logging(IDENT, target=target)
    user = printable(args.user[:MAX_ARG])
    paths = paths_from_args(args)
    try:
        settings = load_config(paths.config_file).get(DirectSettings)
    except HvGuestError as exc:
        log.error("no host keys for %s: %s", user, exc)
        return 1
    if not (settings.enabled and settings.authorized_keys_from_host):
        log.info("asked for %s's keys, but direct.authorized_keys_from_host is off", user)
        return 0
    if args.user != settings.user:
        log.info("no host keys for %s: only %s may log in with them (direct.user)",
                 user, settings.user)
        return 0
    from hvguest.pool import PoolRegistry, PoolStore  # not needed for the refusals above

    registry = PoolRegistry()
    try:
        # Reading creates nothing: no pool file yet is no key.
        exists = os.path.lexists(paths.pool_file(KEYS_POOL))
        items = PoolStore(paths, registry).items(KEYS_POOL) if exists else []
    except (OSError, HvGuestError) as exc:
        log.error("no host keys for %s: cannot read KVP pool %d: %s", user, KEYS_POOL, exc)
        return 1
    finally:
        registry.close_all()
    selection = select_keys(items)
    for item, reason in selection.rejected:
        log.warning("ignored host key item %s: %s", item, reason,
                    extra={"HVGUEST_KVP_KEY": item})
    offered = args.fingerprint[:MAX_ARG]
    matched = [name for name, key in selection.keys if fingerprint(key.blob) == offered]
    log.info("host keys from KVP pool %d for %s: %d offered to sshd, %d ignored%s",
             KEYS_POOL, user, len(selection.keys), len(selection.rejected),
             f"; the connecting key is {matched[0]}" if matched else "",
             extra={"HVGUEST_DIRECT_USER": user, "HVGUEST_DIRECT_MATCH": matched[0]
                    if matched else ""})
    sys.stdout.write("".join(line + "\n" for line in selection.lines()))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
