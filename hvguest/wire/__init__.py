"""hvguest.wire: pure codecs (bytes <-> messages) for every Hyper-V guest interface.

Stdlib only, no I/O. Decoders raise only ``WireError`` (field and limit named).

* ``status``: ``HvStatus`` codes.
* ``icmsg``: IC header, responses, version negotiation and the guests' version tables.
* ``vmbus``: packet descriptor, in-band packets, ring header, heartbeat / shutdown /
  time-sync bodies, FILETIME conversion. ``ring``: one direction of a ring buffer
  (index arithmetic and framing on a buffer, shared by the transport and the simulator).
* ``kvp``: the import point for every KVP wire name, re-exported from ``kvp_layout``
  (sizes, offsets, enums), ``kvp_request`` (the daemon-side ``hv_kvp_msg`` requests),
  ``kvp_reply`` (the replies) and ``kvp_host`` (the host wire forms).
* ``kvp_kernel``: the kernel's host <-> daemon KVP conversions, for the simulator.
* ``vss``: ``hv_vss_msg``. ``fcopy``: file-copy messages (UTF-8 and UTF-16 names).
* ``pool``: KVP pool-file records.
"""
