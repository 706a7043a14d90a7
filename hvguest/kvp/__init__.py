"""KVP (Data Exchange) helpers of hvguest-kvpd, with I/O and injectable roots.

* ``settings``: the "kvp" config section (NIC filters, sizes, republish, network stack).
* ``netlink``: a small rtnetlink reader (links, addresses, default routes).
* ``autopool``: the generated items of pool 2 (FQDN, addresses, OS identity).
* ``ipinfo``: GET_IP_INFO answers per adapter (addresses, gateways, DNS, DHCP).
* ``netconfig``: SET_IP_INFO applied through NetworkManager, systemd-networkd,
  netplan or ifupdown, with rollback inside the kernel's 30 s window.

The pool files themselves are ``hvguest.pool``; the protocol role is
``hvguest.roles.kvp``.
"""
