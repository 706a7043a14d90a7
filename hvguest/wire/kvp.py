"""KVP ("Data Exchange") messages: the daemon-side ``hv_kvp_msg`` (7432 bytes,
protocol.md §2.2/§2.3). This module is the import point for every KVP wire name; it
re-exports, unchanged:

* ``kvp_layout``: sizes, offsets, the operation/pool/type enums;
* ``kvp_request``: the requests the daemon reads (decoded and encoded);
* ``kvp_reply``: the replies the daemon writes, and their decoding for the simulator;
* ``kvp_host``: the host wire forms the kernel converts from and to.

Daemon side: every string is NUL-terminated UTF-8; the kernel zero-fills every byte it
does not set. Offsets (from the start of the message):

* header: operation u8 @0, pool u8 @1; in replies the u32 status overlays @0-3
* GET/SET: value_type @4, key_size @8, value_size @12, key[512] @16, value[2048] @528
* ENUMERATE: index @4, value_type @8, key_size @12, value_size @16, key @20, value @532
* DELETE: key_size @4, key[512] @8
* IP info: adapter_id[256] @4, addr_family @260, dhcp_enabled @261, ip_addr[2048] @262,
  sub_net[2048] @2310, gate_way[1024] @4358, dns_addr[2048] @5382
* register: version[512] @4
"""

from __future__ import annotations

# Star imports on purpose: each module's ``__all__`` is the list, so a name added there
# is importable from here without a second list to keep in step.
from hvguest.wire import kvp_host as _host
from hvguest.wire import kvp_layout as _layout
from hvguest.wire import kvp_reply as _reply
from hvguest.wire import kvp_request as _request
from hvguest.wire.kvp_host import *  # noqa: F403
from hvguest.wire.kvp_layout import *  # noqa: F403
from hvguest.wire.kvp_reply import *  # noqa: F403
from hvguest.wire.kvp_request import *  # noqa: F403

__all__ = [*_layout.__all__, *_request.__all__, *_reply.__all__, *_host.__all__]
