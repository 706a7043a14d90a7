"""The status document as text: the summary table and one service in detail.

Every string here comes from the document; what came from the machine (sysfs, the
daemons' state files) is written through ``write_line``, which escapes it.
"""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from hvguest.status.document import SERVICES, ServiceEntry, StatusDocument
from hvguest.text import write_line

SYMBOL = {"error": "x", "warning": "!", "info": "i"}
MAX_SUMMARY_PROBLEMS = 5


def _daemon_text(entry: ServiceEntry, own: bool) -> str:
    d = entry.get("daemon")
    if not own or d is None:
        return "(kernel)"
    if not entry["offered"] and not d["running"]:
        return "-"
    if d["running"]:
        return "running"
    if d["source"] == "systemd":
        return d["active_state"] or "stopped"
    return "stopped" if d["stale_state"] else "not running"


def _driver_text(entry: ServiceEntry) -> str:
    if not entry["offered"]:
        return "-"
    drv = entry["driver"] or "NONE"
    dev = entry["device"]
    return f"{drv}({dev['uio']})" if dev and dev["uio"] else drv


def _when(text: object) -> str:
    # "2026-01-02T03:04:05Z" -> "03:04:05"; keeps a line short.
    s = str(text or "")
    return s[11:19] if len(s) >= 19 and s[10] == "T" else s


def _activity(service: str, entry: ServiceEntry) -> str:
    d = entry["details"]
    if not entry["offered"]:
        return "not offered by the host"
    if service == "heartbeat":
        health = d.get("health") or {}
        contact = d.get("contact") or "?"
        level = health.get("level", "?") if isinstance(health, dict) and health \
            else "not reported"
        return f"host contact: {contact}; app health: {level}"
    if service == "shutdown":
        hooks = d.get("hooks") or []
        return f"{len(hooks)} pre-shutdown hook{'s' if len(hooks) != 1 else ''}"
    if service == "timesync":
        if d.get("offset_ms") is not None:
            ref = "chrony uses it" if d.get("chrony_refclock") else "no refclock"
            return f"offset {d['offset_ms']:+.1f} ms; {ref}"
        return d.get("read_error") or "offset unknown"
    if service == "vss" and d.get("frozen"):
        return "FROZEN now"
    last = d.get("last_freeze") if service == "vss" else None
    if isinstance(last, dict):
        states: dict[str, int] = {}
        for m in last.get("mounts") or []:
            if isinstance(m, dict):
                states[str(m.get("state"))] = states.get(str(m.get("state")), 0) + 1
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        ok = "ok" if last.get("ok") else "FAILED"
        return f"last freeze {ok} {_when(last.get('time'))} ({counts or 'no filesystems'})"
    if service == "fcopy" and d.get("in_progress"):
        p = d["in_progress"]
        size = p.get("file_size", p.get("size"))
        return f"copying {os.path.basename(str(p.get('name')))} {p.get('bytes_done')}/{size}"
    op = entry.get("last_op")
    text = f"{op.get('op')} {op.get('result')} {_when(op.get('time'))}" if op else ""
    pools = d.get("pools") if service == "kvp" else None
    if isinstance(pools, dict) and pools:
        keys = sum(int(v.get("records", 0)) for v in pools.values() if isinstance(v, dict))
        count = f"{keys} key" if keys == 1 else f"{keys} keys"
        text = f"{count}; {text}" if text else count
    return text or "no operation yet"


def render_summary(doc: StatusDocument, out: TextIO) -> None:
    def line_out(text: str) -> None:
        write_line(out, text)

    if not doc["hyperv"]:
        line_out(f"{doc['summary']}")
        return
    ver = f"  {doc['overall'].upper()}  ({doc['vmbus_devices']} VMBus devices)"
    line_out(f"hvguest status:{ver}")
    line_out(f"{'SERVICE':<10} {'HOST':<8} {'DRIVER':<20} {'DAEMON':<12} ACTIVITY")
    for service in SERVICES:
        entry = doc["services"][service]
        own = service in ("heartbeat", "kvp", "vss", "fcopy")
        line = (f"{service:<10} {'offered' if entry['offered'] else 'off':<8} "
                f"{_driver_text(entry):<20} {_daemon_text(entry, own):<12} "
                f"{_activity(service, entry)}")
        line_out(line[:120].rstrip())
    direct = doc.get("direct")
    if direct is not None:
        line_out(f"{'direct':<10} {'-':<8} {'vsock':<20} {'sshd':<12} {direct['summary']}"[:120])
    rank = {"error": 0, "warning": 1, "info": 2}
    ordered = sorted(doc["problems"], key=lambda p: rank[p["severity"]])
    if ordered:
        line_out("")
    for p in ordered[:MAX_SUMMARY_PROBLEMS]:
        line_out(f"{SYMBOL[p['severity']]} {p['service']}: {p['message']}")
        if p["remedy"]:
            line_out(f"    -> {p['remedy']}")
    if len(ordered) > MAX_SUMMARY_PROBLEMS:
        line_out(f"... {len(ordered) - MAX_SUMMARY_PROBLEMS} more: hvguestctl status SERVICE")
    if doc["unreadable"]:
        line_out(f"could not read {len(doc['unreadable'])} item(s) (not root?): "
                 "hvguestctl status --json lists them")


def _special_details(service: str, details: dict[str, Any]) -> list[str]:
    """Readable lines for the shapes worth a table; the keys used are removed."""
    out: list[str] = []
    last = details.get("last_freeze") if service == "vss" else None
    if isinstance(last, dict):
        details.pop("last_freeze")
        ok = "ok" if last.get("ok") else "FAILED"
        out.append(f"  last freeze: {last.get('time')} {ok} {last.get('reason') or ''}".rstrip()
                   + (f" ({last['freeze_ms']} ms)" if last.get("freeze_ms") is not None else ""))
        for m in last.get("mounts") or []:
            if isinstance(m, dict):
                msg = f" {m['message']}" if m.get("message") else ""
                out.append(f"    {m.get('mount_point')} ({m.get('fstype')}): "
                           f"{m.get('state')}{msg}")
        thaw = last.get("thaw")
        if isinstance(thaw, dict):
            out.append(f"  thaw: {thaw.get('time')} {'ok' if thaw.get('ok') else 'FAILED'} "
                       f"({thaw.get('why')}) {thaw.get('reason') or ''}".rstrip())
    transfers = details.get("recent_transfers") if service == "fcopy" else None
    if isinstance(transfers, list):
        details.pop("recent_transfers")
        if transfers:
            out.append("  recent transfers:")
        for t in transfers[-5:]:
            if isinstance(t, dict):
                out.append(f"    {t.get('finished')} {t.get('result')} {t.get('name')} "
                           f"{t.get('size')}/{t.get('file_size')} bytes "
                           f"{t.get('detail') or ''}".rstrip())
    pools = details.get("pools") if service == "kvp" else None
    if isinstance(pools, dict) and pools:
        details.pop("pools")
        shown = ", ".join(
            f"{n}: {v.get('records', '?')}" if isinstance(v, dict) and "error" not in v
            else f"{n}: unreadable" for n, v in sorted(pools.items()))
        out.append(f"  pool records: {shown}")
        for n, v in sorted(pools.items()):
            holder = v.get("lock_holder") if isinstance(v, dict) else None
            if isinstance(holder, dict):
                out.append(f"  pool {n} locked: {holder.get('lock')} held by pid "
                           f"{holder.get('pid')}, user {holder.get('user') or holder.get('uid')},"
                           f" command {holder.get('command')!r}")
    return out


def render_service(doc: StatusDocument, service: str, out: TextIO) -> None:
    entry = doc["services"][service]
    def w(text: str) -> None:
        write_line(out, text)

    w(f"{service} ({entry['host_name']}): {entry['health']}")
    if not doc["hyperv"]:
        w(f"  {doc['summary']}")
        return
    dev = entry.get("device")
    if dev:
        w(f"  device:   {dev['instance']} (VMBus id {dev['vmbus_id']})")
        w(f"  driver:   {_driver_text(entry)}")
    else:
        w("  device:   not offered by the host")
    d = entry.get("daemon")
    if d:
        run_text = "running" if d["running"] else "not running"
        how = {"systemd": f"unit {d['unit']} {d['active_state']}/{d['sub_state']}",
               "pid": f"pid {d['pid']}", "none": "no state published"}[d["source"]]
        state = f", state {d['state']}" if d.get("state") else ""
        w(f"  daemon:   {d['name']} {run_text} ({how}){state}")
    if entry.get("protocol_version"):
        w(f"  protocol: {entry['protocol_version']}")
    op = entry.get("last_op")
    if op:
        w(f"  last op:  {op.get('op')} {op.get('result')} at {op.get('time')}"
          f"{': ' + op['detail'] if op.get('detail') else ''}")
    recent = entry.get("recent") or []
    if len(recent) > 1:
        w("  recent:")
        for r in recent[-5:]:
            w(f"    {r.get('time')} {r.get('op')} {r.get('result')} {r.get('detail', '')}")
    err = entry.get("last_error")
    if err:
        w(f"  last error: {err.get('message')} ({err.get('time')})")
        if err.get("remedy"):
            w(f"    -> {err['remedy']}")
    details = dict(entry.get("details") or {})
    for line in _special_details(service, details):
        w(line)
    if details:
        w("  details:")
        for key, value in details.items():
            text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
            w(f"    {key}: {text}"[:400])
    for p in entry["problems"]:
        w(f"{SYMBOL[p['severity']]} {p['message']}")
        if p["remedy"]:
            w(f"    -> {p['remedy']}")
    if doc["unreadable"]:
        w("could not read:")
        for item in doc["unreadable"]:
            w(f"  {item}")
