"""Models of the guest kernel's Hyper-V drivers, as seen by the daemons.

Each model is a pure state machine: it never sleeps or does I/O. Time comes from a
``TimerQueue`` the event loop drives, host traffic from a ``HostChannel`` and daemon
traffic through the ``Device`` methods of a ``UtilTransport`` (or ``UioDevice``).
"""
