"""KVP daemons against the reference hv_kvp_daemon, through the differential harness.

``DAEMONS`` lists the candidates; each is compared with the reference field by field.
``ALLOWED`` documents every difference that is expected, and why.
"""

from __future__ import annotations

import os
import sys
import tempfile

import pytest
from differential import KVP_SCENARIO, Difference, HostReply, compare, run_scenario

pytestmark = [pytest.mark.root, pytest.mark.fuse, pytest.mark.reference, pytest.mark.system]

REFERENCE = ["/usr/sbin/hv_kvp_daemon", "-n"]


def _hvguest_kvpd() -> list[str]:
    # hvguest.version in pool 1 is switched off so pool 1 holds only the host's items.
    config = os.path.join(tempfile.mkdtemp(prefix="hvguest-diff-kvp-"), "hvguest.yaml")
    with open(config, "w") as f:
        f.write("kvp:\n  publish_version: false\n")
    return [sys.executable, "-m", "hvguest.daemons.kvpd", "--config", config]


DAEMONS: dict[str, list[str]] = {
    "reference": REFERENCE,
    "hvguest-kvpd": _hvguest_kvpd(),
}
ALLOWED: dict[str, str] = {
    "get-existing.value": "GET value: the reference returns an empty string, because it "
    "copies value_size (0 in a GET) bytes and writes the value at 528, while the kernel "
    "reads it from 532",
    "get-existing.value_size": "follows from the GET value above (2 * (units + 1))",
}

_reference: list[HostReply] = []


def reference_run() -> list[HostReply]:
    if not _reference:
        _reference.extend(run_scenario(REFERENCE, KVP_SCENARIO))
    return _reference


def test_reference_scenario_shape() -> None:
    ref = {r.step: r for r in reference_run()}
    ok, cont, fail = 0, 0x80070103, 0x80004005
    assert all(ref[s].status == ok for s in ("set-p0", "set-p0-unicode", "set-p3"))
    assert (ref["get-existing"].status, ref["get-existing"].fields["value"]) == (ok, "")
    assert ref["get-missing"].status == cont
    assert ref["get-case"].status == cont  # keys are case-sensitive
    assert ref["enum-p0"].fields["items"] == [
        ["HostName", "hyperv-host-01"],
        ["Schlüssel ключ", "värde 值 \U0001f600"],
        ["Counter", "4294967295"],
        ["Big", "18446744073709551615"],
    ]
    assert ref["enum-p1"].fields["items"] == [["Status", "short"]]
    assert ref["enum-p3-end"].status == cont
    assert len(ref["enum-auto"].fields["items"]) == 10
    assert ref["enum-auto-end"].status == cont
    assert (ref["delete"].status, ref["delete-again"].status) == (ok, cont)
    assert [k for k, _v in ref["enum-p0-after"].fields["items"]] == ["HostName",
                                                                   "Schlüssel ключ", "Big"]
    assert ref["empty-pool"].status == cont
    assert ref["ip-info-unknown-mac"].status == fail
    assert ref["alive"].fields["alive"] is True


@pytest.mark.parametrize("name", sorted(DAEMONS))
def test_matches_reference(name: str) -> None:
    candidate = run_scenario(DAEMONS[name], KVP_SCENARIO)
    explained: list[Difference] = []
    unexplained = compare(reference_run(), candidate, ALLOWED, explained=explained)
    assert not unexplained, "\n".join(str(d) for d in unexplained)
