"""hvguest.wire: pure codecs (bytes <-> messages) for every Hyper-V guest interface.

Stdlib only, no I/O. Decoders raise only ``WireError`` (field and limit named).

* ``status``: ``HvStatus`` codes.
* ``icmsg``: IC header, responses, version negotiation and the guests' version tables.
* ``vmbus``: packet descriptor, in-band packets, ring header, heartbeat / shutdown /
  time-sync bodies, FILETIME conversion.
* ``kvp``: daemon-side ``hv_kvp_msg`` requests and replies, and (re-exported from
  ``kvp_layout`` and ``kvp_host``) the layout constants and host wire forms.
* ``kvp_kernel``: the kernel's host <-> daemon KVP conversions, for the simulator.
* ``vss``: ``hv_vss_msg``. ``fcopy``: file-copy messages (UTF-8 and UTF-16 names).
* ``pool``: KVP pool-file records.
"""
