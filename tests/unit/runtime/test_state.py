"""StatePublisher: atomic publish, hold/release, readers."""

from __future__ import annotations

import json
import os
import re
import stat

from hvguest.paths import Paths
from hvguest.state import StatePublisher, read_all_states, read_state


def make(tmp_path: os.PathLike[str], service: str = "kvp") -> tuple[Paths, StatePublisher]:
    paths = Paths(run=os.path.join(str(tmp_path), "run", "hvguest"))
    return paths, StatePublisher(service, paths, now=lambda: "2026-01-01T00:00:00Z")


def test_publish_writes_document_atomically(tmp_path: os.PathLike[str]) -> None:
    paths, pub = make(tmp_path)
    pub.update(state="serving", device="/dev/vmbus/hv_kvp", details={"pools": 5})
    pub.record_op("SET", "ok", "pool 1 key foo")
    pub.record_error("pool 1 locked", "stop the other writer")
    assert pub.publish()
    st = os.stat(paths.run)
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert stat.S_IMODE(os.stat(pub.path).st_mode) == 0o644
    assert os.listdir(paths.run) == ["kvp.json"]  # no temp file left
    doc = read_state(paths, "kvp")
    assert doc is not None
    assert doc["service"] == "kvp" and doc["pid"] == os.getpid()
    assert doc["state"] == "serving" and doc["device"] == "/dev/vmbus/hv_kvp"
    assert doc["details"] == {"pools": 5}
    assert doc["last_op"] == {
        "op": "SET",
        "result": "ok",
        "detail": "pool 1 key foo",
        "time": "2026-01-01T00:00:00Z",
    }
    assert doc["recent"] == [doc["last_op"]]
    assert doc["last_error"]["remedy"] == "stop the other writer"
    assert set(doc) >= {"started", "updated", "version"}
    pub.clear_error()
    pub.publish()
    assert read_state(paths, "kvp")["last_error"] is None  # type: ignore[index]


def test_directory_mode_ignores_umask(tmp_path: os.PathLike[str]) -> None:
    paths, pub = make(tmp_path)
    old = os.umask(0o077)
    try:
        assert pub.publish()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(paths.run).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(pub.path).st_mode) == 0o644


def test_history_is_bounded(tmp_path: os.PathLike[str]) -> None:
    paths = Paths(run=str(tmp_path))
    pub = StatePublisher("vss", paths, history=3)
    for i in range(5):
        pub.record_op("FREEZE", "ok", str(i))
    assert [e["detail"] for e in pub.doc["recent"]] == ["2", "3", "4"]


def test_hold_defers_writes_until_release(tmp_path: os.PathLike[str]) -> None:
    paths, pub = make(tmp_path, "vss")
    pub.update(state="serving")
    pub.publish()
    pub.hold()
    pub.update(state="frozen")
    pub.record_op("FREEZE", "ok")
    assert pub.publish() is False
    assert read_state(paths, "vss")["state"] == "serving"  # type: ignore[index]
    pub.update(state="serving")
    pub.release()
    doc = read_state(paths, "vss")
    assert doc is not None and doc["state"] == "serving"
    assert doc["last_op"]["op"] == "FREEZE"


def test_readers_tolerate_garbage(tmp_path: os.PathLike[str]) -> None:
    paths, pub = make(tmp_path, "kvp")
    assert read_state(paths, "kvp") is None
    assert read_all_states(paths) == {}
    pub.publish()
    StatePublisher("fcopy", paths).publish()
    with open(os.path.join(paths.run, "broken.json"), "w") as f:
        f.write("{not json")
    with open(os.path.join(paths.run, "list.json"), "w") as f:
        json.dump([1], f)
    with open(os.path.join(paths.run, ".tmp123.tmp"), "w") as f:
        f.write("{}")
    assert sorted(read_all_states(paths)) == ["fcopy", "kvp"]


def test_publish_failure_is_reported_not_raised(tmp_path: os.PathLike[str]) -> None:
    blocker = os.path.join(str(tmp_path), "file")
    with open(blocker, "w"):
        pass
    pub = StatePublisher("kvp", Paths(run=os.path.join(blocker, "sub")))
    assert pub.publish() is False


def test_remove(tmp_path: os.PathLike[str]) -> None:
    paths, pub = make(tmp_path)
    pub.publish()
    pub.remove()
    pub.remove()
    assert read_state(paths, "kvp") is None


def test_utc_now_is_iso_8601_to_the_second() -> None:
    from datetime import UTC, datetime

    from hvguest.state import utc_now

    before = datetime.now(UTC).replace(microsecond=0)
    text = utc_now()
    after = datetime.now(UTC)
    # the format readers parse (the old datetime-based text): no fraction, "Z" for UTC
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text), text
    assert before <= datetime.fromisoformat(text.replace("Z", "+00:00")) <= after
