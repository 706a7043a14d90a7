"""hvguestctl kvp: read and edit the KVP pools, with or without hvguest-kvpd running.

Edits go straight to the pool files under the same two locks every writer uses
(flock + fcntl), so they are safe next to the daemon, cloud-init and hv_kvp_daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from hvguest.cli import common
from hvguest.cli.privilege import require_writable
from hvguest.config import load_config
from hvguest.errors import HvGuestError, LocalUsageError
from hvguest.paths import Paths
from hvguest.pool import DEFAULT_MAX_RECORDS, PoolRegistry, PoolStore
from hvguest.roots import paths_from_args
from hvguest.text import printable, say, terminal_safe_json
from hvguest.wire.pool import POOL_COUNT

POOL_NAMES = {
    0: "external (host to guest)",
    1: "guest (guest to host)",
    2: "auto (intrinsic; the host reads generated items)",
    3: "auto external (host parameters)",
    4: "auto internal",
}


def _pool_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pool must be a number 0-4, got {text!r}") from None
    if not 0 <= value < POOL_COUNT:
        raise argparse.ArgumentTypeError(f"pool is {value}, must be 0-4")
    return value


HELP = "key-value pairs exchanged with the host: list, get, set, delete, watch"
DESCRIPTION = "Read and edit the Hyper-V KVP pools (/var/lib/hyperv/.kvp_pool_N)."


def register(sub: Any) -> None:
    ksub = common.command_group(sub, "kvp", HELP, DESCRIPTION)

    ls = ksub.add_parser("list", help="items of one pool or of all pools")
    ls.add_argument("--pool", type=_pool_arg, help="only this pool (0-4)")
    common.add_json_option(ls)
    ls.add_argument(
        "--generated",
        action="store_true",
        help="with pool 2: also the items hvguest-kvpd generates (FQDN, addresses, OS)",
    )
    common.finish_action(ls, cmd_list)

    g = ksub.add_parser("get", help="print the value of KEY (first pool holding it)")
    g.add_argument("key")
    g.add_argument("--pool", type=_pool_arg, help="look only in this pool")
    common.finish_action(g, cmd_get)

    s = ksub.add_parser("set", help="store KEY=VALUE for the host to read (default pool 1)")
    s.add_argument("key")
    s.add_argument("value")
    s.add_argument("--pool", type=_pool_arg, default=1, help="pool (default 1, guest to host)")
    s.add_argument(
        "--unsafe",
        action="store_true",
        help="allow keys up to 511 and values up to 2047 bytes (the host sees 254/1022)",
    )
    common.add_config_option(s, "kvp.unsafe_sizes")
    common.finish_action(s, cmd_set)

    d = ksub.add_parser("delete", help="remove KEY (default pool 1)")
    d.add_argument("key")
    d.add_argument("--pool", type=_pool_arg, default=1, help="pool (default 1)")
    common.finish_action(d, cmd_delete)

    w = ksub.add_parser("watch", help="print changes made by the host or another writer")
    w.add_argument("--pool", type=_pool_arg, help="only this pool")
    w.add_argument("--interval", type=float, default=1.0, help="seconds between checks (default 1)")
    w.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    common.finish_action(w, cmd_watch)


def _store(args: argparse.Namespace) -> tuple[Paths, PoolStore]:
    paths = paths_from_args(args)
    return paths, PoolStore(paths, PoolRegistry())


def _pools(args: argparse.Namespace) -> list[int]:
    return [args.pool] if args.pool is not None else list(range(POOL_COUNT))


def _exists(store: PoolStore, pool: int) -> bool:
    # Reading never creates pool files (or /var/lib/hyperv) on a machine without them.
    return os.path.exists(store.paths.pool_file(pool))


def _items(store: PoolStore, pool: int) -> list[tuple[str, str]]:
    return store.items(pool) if _exists(store, pool) else []


def _skipped(store: PoolStore, pool: int, items: list[tuple[str, str]]) -> int:
    if not _exists(store, pool):
        return 0
    return store.pool(pool).record_count() - len(items)


def cmd_list(args: argparse.Namespace) -> int:
    _paths, store = _store(args)
    pools = _pools(args)
    doc: dict[str, Any] = {}
    for n in pools:
        items = _items(store, n)
        doc[str(n)] = {
            "name": POOL_NAMES[n],
            "path": store.paths.pool_file(n),
            "items": [{"key": k, "value": v} for k, v in items],
            "unreadable_records": _skipped(store, n, items),
        }
        if n == 2 and args.generated:
            doc[str(n)]["generated"] = [{"key": k, "value": v} for k, v in _generated(store.paths)]
    if args.json:
        # Readable non-ASCII text, but nothing a terminal could act on; same JSON value.
        sys.stdout.write(
            terminal_safe_json(json.dumps({"pools": doc}, indent=2, ensure_ascii=False)) + "\n"
        )
        return 0
    for n in pools:
        entry = doc[str(n)]
        if len(pools) > 1:
            say(f"# pool {n}: {entry['name']}, {len(entry['items'])} item(s)")
        for item in entry["items"]:
            say(f"{item['key']}={item['value']}")
        if "generated" in entry:
            say("# generated for the host by hvguest-kvpd:")
            for item in entry["generated"]:
                say(f"{item['key']}={item['value']}")
        if entry["unreadable_records"]:
            say(
                f"# pool {n}: {entry['unreadable_records']} record(s) skipped"
                " (invalid UTF-8, no NUL or empty key)",
                file=sys.stderr,
            )
    return 0


def _generated(paths: Paths) -> list[tuple[str, str]]:
    """Pool 2 as the host enumerates it, computed here the way hvguest-kvpd does."""
    from hvguest.kvp.autopool import AutoPool, Fqdn
    from hvguest.kvp.settings import KvpSettings, nic_excluded, nic_rank
    from hvguest.state import read_state

    try:
        settings = load_config(paths.config_file).get(KvpSettings)
    except (HvGuestError, KeyError):
        settings = KvpSettings()
    state = read_state(paths, "kvp") or {}
    version = (state.get("details") or {}).get("protocol_version")
    fqdn = Fqdn()
    fqdn.refresh(wait=settings.fqdn_timeout)
    auto = AutoPool(
        paths,
        version=lambda: version,
        exclude=lambda name: nic_excluded(settings, name),
        rank=lambda name: nic_rank(settings, name),
        fqdn=fqdn,
    )
    return auto.items()


def cmd_get(args: argparse.Namespace) -> int:
    _paths, store = _store(args)
    for n in _pools(args):
        if not _exists(store, n):
            continue
        value = store.get(n, args.key)
        if value is not None:
            say(value)
            return 0
    where = f"pool {args.pool}" if args.pool is not None else "any pool"
    say(f"hvguestctl: KVP key {args.key!r} not found in {where}", file=sys.stderr)
    return 1


def cmd_set(args: argparse.Namespace) -> int:
    paths = paths_from_args(args)
    unsafe = args.unsafe
    max_records = DEFAULT_MAX_RECORDS
    try:
        config = common.load_cli_config(args, paths)
        unsafe = unsafe or bool(config.section("kvp").unsafe_sizes)
        max_records = int(config.section("kvp").max_records)
    except (HvGuestError, KeyError):
        pass
    require_writable("kvp set", paths.pool_file(args.pool))
    store = PoolStore(paths, PoolRegistry(), max_records=max_records)
    store.set(args.pool, args.key, args.value, unsafe=unsafe)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _paths, store = _store(args)
    require_writable("kvp delete", store.paths.pool_file(args.pool))
    if not _exists(store, args.pool) or not store.delete(args.pool, args.key):
        say(
            f"KVP key {args.key!r} is not in pool {args.pool}; nothing to delete", file=sys.stderr
        )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise LocalUsageError(f"--interval is {args.interval:g}, must be positive")
    _paths, store = _store(args)
    pools = _pools(args)
    before = {n: _items(store, n) for n in pools}
    rounds = 0
    try:
        while not args.count or rounds < args.count:
            time.sleep(args.interval)
            rounds += 1
            for n in pools:
                now = _items(store, n)
                if now != before[n]:
                    for line in diff_items(n, before[n], now):
                        say(line, flush=True)
                    before[n] = now
    except KeyboardInterrupt:
        pass
    return 0


def diff_items(pool: int, old: list[tuple[str, str]], new: list[tuple[str, str]]) -> list[str]:
    """``+``/``-``/``~`` lines, first occurrence of each key (as readers see it);
    keys and values escaped (they come from the host or another writer)."""
    first_old: dict[str, str] = {}
    for k, v in old:
        first_old.setdefault(k, v)
    first_new: dict[str, str] = {}
    for k, v in new:
        first_new.setdefault(k, v)
    stamp = time.strftime("%H:%M:%S")
    lines = []
    for k, v in first_new.items():
        if k not in first_old:
            lines.append(printable(f"{stamp} pool {pool} + {k}={v}"))
        elif first_old[k] != v:
            lines.append(printable(f"{stamp} pool {pool} ~ {k}={v}"))
    for k in first_old:
        if k not in first_new:
            lines.append(printable(f"{stamp} pool {pool} - {k}"))
    return lines
