"""KVP host scenarios run against both hvguest-kvpd and the reference daemon.

Importable from the simulator tests: their directory is on sys.path.
"""

from __future__ import annotations

from hvguest.sim.client import SimClient
from hvguest.wire.status import HvStatus

HV_S_OK = HvStatus.HV_S_OK
HV_S_CONT = HvStatus.HV_S_CONT


def pool_round_trip(sim: SimClient, pool: int, get_reply: str | None) -> None:
    """SET two keys, GET, ENUMERATE, DELETE on ``pool``; afterwards only "second"=2
    is left. ``get_reply`` is what a successful GET returns (None: the stored value)."""
    value = f"value {pool} \u00e9\u4e2d"
    assert sim.kvp_set(pool, f"key{pool}", value) == HV_S_OK
    assert sim.kvp_set(pool, "second", "2") == HV_S_OK
    expected = value if get_reply is None else get_reply
    assert sim.kvp_get(pool, f"key{pool}") == (HV_S_OK, expected)
    assert sim.kvp_get(pool, "missing")[0] == HV_S_CONT
    assert sim.kvp_enumerate_all(pool) == [(f"key{pool}", value), ("second", "2")]
    assert sim.kvp_enumerate(pool, 2)[0] == HV_S_CONT
    assert sim.kvp_delete(pool, f"key{pool}") == HV_S_OK
    assert sim.kvp_delete(pool, f"key{pool}") == HV_S_CONT
    assert sim.kvp_enumerate_all(pool) == [("second", "2")]
