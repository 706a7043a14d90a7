"""Differential harness: play one host scenario against two daemons, compare replies.

A scenario is a list of ``Step``s, each one SimClient control operation. Running it
yields one ``HostReply`` per step: the host-visible status and fields. ``compare``
reports every field that differs between a reference run and a candidate run, except
those listed in ``allowed``, which maps ``"step"`` (any field of that step) or
``"step.field"`` to the documented reason the difference is expected.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hvguest.sim.client import SimClient


@dataclass(frozen=True)
class Step:
    name: str
    op: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class HostReply:
    step: str
    op: str
    status: int | None
    fields: dict[str, Any]

    def values(self) -> dict[str, Any]:
        return {"status": self.status, **self.fields}


@dataclass(frozen=True)
class Difference:
    step: str
    field: str
    reference: Any
    candidate: Any
    reason: str | None = None  # set when ``allowed`` explains it

    def __str__(self) -> str:
        text = f"{self.step}.{self.field}: reference {self.reference!r}, candidate " \
               f"{self.candidate!r}"
        return f"{text} (allowed: {self.reason})" if self.reason else text


def _reply(step: Step, result: Any) -> HostReply:
    if isinstance(result, dict) and "status" in result:
        fields = dict(result.get("fields") or {})
        for key in ("items", "steps"):
            if key in result:
                fields[key] = result[key]
        return HostReply(step.name, step.op, result["status"], fields)
    if step.op in ("kvp_raw", "vss_raw"):
        data = bytes.fromhex(result) if result else b""
        status = int.from_bytes(data[:4], "little") if len(data) >= 4 else None
        return HostReply(step.name, step.op, status, {"reply": data.hex(), "length": len(data)})
    if step.op == "exec":
        return HostReply(step.name, step.op, result["returncode"],
                         {"stdout": bytes.fromhex(result["stdout"]).decode("utf-8", "replace")})
    return HostReply(step.name, step.op, None, {"result": result})


def run_steps(sim: SimClient, scenario: Iterable[Step]) -> list[HostReply]:
    replies = []
    for step in scenario:
        if step.op == "daemon_alive":
            replies.append(HostReply(step.name, step.op, None, {"alive": sim.daemon_alive()}))
            continue
        replies.append(_reply(step, sim.call(step.op, **dict(step.args))))
    return replies


def run_scenario(command: list[str], scenario: Sequence[Step], *,
                 workdir: str | None = None, **start: Any) -> list[HostReply]:
    """Start ``command`` behind the simulator, play ``scenario``, return the replies."""
    with tempfile.TemporaryDirectory(prefix="hvguest-diff-") as tmp:
        wd = workdir or os.path.join(tmp, "sim")
        with SimClient.start(command, workdir=wd, **start) as sim:
            return run_steps(sim, scenario)


def compare(reference: Sequence[HostReply], candidate: Sequence[HostReply],
            allowed: Mapping[str, str], *, explained: list[Difference] | None = None
            ) -> list[Difference]:
    """The unexplained differences (empty when the candidate matches); differences that
    ``allowed`` explains are appended to ``explained`` if given."""
    out: list[Difference] = []
    if [r.step for r in reference] != [c.step for c in candidate]:
        return [Difference("*", "steps", [r.step for r in reference],
                           [c.step for c in candidate])]
    for ref, cand in zip(reference, candidate, strict=True):
        rv, cv = ref.values(), cand.values()
        for name in sorted(set(rv) | set(cv)):
            if rv.get(name) == cv.get(name):
                continue
            reason = allowed.get(f"{ref.step}.{name}", allowed.get(ref.step))
            diff = Difference(ref.step, name, rv.get(name), cv.get(name), reason)
            if reason is None:
                out.append(diff)
            elif explained is not None:
                explained.append(diff)
    return out


# -- the KVP scenario ----------------------------------------------------------------------
def _set(name: str, pool: int, key: str, value: Any, vtype: str = "REG_SZ") -> Step:
    return Step(name, "kvp_set", {"pool": pool, "key": key, "value": value, "value_type": vtype})


KVP_SCENARIO: list[Step] = [
    _set("set-p0", 0, "HostName", "hyperv-host-01"),
    _set("set-p0-unicode", 0, "Schlüssel ключ", "värde 值 \U0001f600"),
    _set("set-p0-u32", 0, "Counter", 4294967295, "REG_U32"),
    _set("set-p0-u64", 0, "Big", 2**64 - 1, "REG_U64"),
    _set("set-p3", 3, "VirtualMachineName", "vm-under-test"),
    _set("upsert-long", 1, "Status", "a rather long initial value"),
    _set("upsert-short", 1, "Status", "short"),
    Step("get-existing", "kvp_get", {"pool": 0, "key": "HostName"}),
    Step("get-missing", "kvp_get", {"pool": 0, "key": "NoSuchKey"}),
    Step("get-case", "kvp_get", {"pool": 0, "key": "hostname"}),
    Step("enum-p0", "kvp_enumerate_all", {"pool": 0}),
    Step("enum-p1", "kvp_enumerate_all", {"pool": 1}),
    Step("enum-p3-0", "kvp_enumerate", {"pool": 3, "index": 0}),
    Step("enum-p3-end", "kvp_enumerate", {"pool": 3, "index": 1}),
    Step("enum-auto", "kvp_enumerate_all", {"pool": 2}),
    Step("enum-auto-end", "kvp_enumerate", {"pool": 2, "index": 10}),
    Step("delete", "kvp_delete", {"pool": 0, "key": "Counter"}),
    Step("delete-again", "kvp_delete", {"pool": 0, "key": "Counter"}),
    Step("enum-p0-after", "kvp_enumerate_all", {"pool": 0}),
    Step("empty-pool", "kvp_enumerate", {"pool": 4, "index": 0}),
    Step("ip-info", "kvp_get_ip_info", {"adapter_id": "00:15:5D:00:00:01"}),
    Step("ip-info-unknown-mac", "kvp_get_ip_info", {"adapter_id": "00:11:22:33:44:55"}),
    Step("alive", "daemon_alive"),
]
