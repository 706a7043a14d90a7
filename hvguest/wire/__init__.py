"""hvguest.wire: pure codecs (bytes <-> messages) for every Hyper-V guest interface.

Stdlib only, no I/O. Modules: ``status`` (HvStatus), ``icmsg`` (IC header, negotiation),
``vmbus`` (packets, ring header, heartbeat/shutdown/timesync bodies), ``kvp``
(hv_kvp_msg and the host forms), ``kvp_kernel`` (the kernel's KVP conversions, for the
simulator), ``vss`` (hv_vss_msg), ``fcopy`` (file copy), ``pool`` (pool-file records).
"""
