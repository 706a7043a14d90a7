"""The emergency-thaw record: whole or absent, root's only, synced before use."""

from __future__ import annotations

import json
import os
import stat

from hvguest.paths import Paths
from hvguest.vss.record import clear_record, read_record, record_path, write_record


def test_record_is_private_synced_and_whole(tmp_path, monkeypatch):
    paths = Paths(run=str(tmp_path / "run"))
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    doc = {"pid": 7, "started": "2026-01-01T00:00:00Z", "mounts": [{"mount_point": "/"}]}
    write_record(paths, doc)
    st = os.stat(record_path(paths))
    # It names what is frozen: not for other users' eyes (as before: 0600).
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert synced, "the record must reach the disk before it is relied on"
    with open(record_path(paths)) as f:
        assert f.read() == json.dumps(doc, indent=2) + "\n"
    assert read_record(paths) == doc
    assert [n for n in os.listdir(paths.run) if n != "vss-frozen.json"] == []  # no temp left
    clear_record(paths)
    assert read_record(paths) is None
    clear_record(paths)  # absent: fine
