"""SSH over Hyper-V sockets (AF_VSOCK): the service GUID of a port, the host's
instructions, authorized keys the host places in KVP pool 0, the systemd units."""
