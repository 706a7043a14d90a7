"""hvguestctl kvp against a private pool directory (no daemon needed)."""

from __future__ import annotations

import json

import pytest

from hvguest.cli.kvp import diff_items
from hvguest.cli.main import main
from hvguest.pool import PoolRegistry

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()


@pytest.fixture()
def pooldir(tmp_path):
    yield str(tmp_path / "hyperv")
    POOLS.close_all()


def run(capsys, *argv):
    code = main(["kvp", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_set_get_list_delete(capsys, pooldir):
    assert run(capsys, "set", "hvguest.test", "v1", "--pool-dir", pooldir)[0] == 0
    assert run(capsys, "set", "other", "v2", "--pool", "0", "--pool-dir", pooldir)[0] == 0
    assert run(capsys, "get", "hvguest.test", "--pool-dir", pooldir)[:2] == (0, "v1\n")
    assert run(capsys, "get", "other", "--pool", "1", "--pool-dir", pooldir)[0] == 1
    code, out, _ = run(capsys, "list", "--pool", "1", "--pool-dir", pooldir)
    assert (code, out) == (0, "hvguest.test=v1\n")
    code, out, _ = run(capsys, "list", "--json", "--pool-dir", pooldir)
    doc = json.loads(out)
    assert doc["pools"]["0"]["items"] == [{"key": "other", "value": "v2"}]
    assert run(capsys, "delete", "hvguest.test", "--pool-dir", pooldir)[0] == 0
    code, _, err = run(capsys, "delete", "hvguest.test", "--pool-dir", pooldir)
    assert code == 0 and "nothing to delete" in err


def test_limits_named_in_errors(capsys, pooldir):
    code, _, err = run(capsys, "set", "k", "v" * 1023, "--pool-dir", pooldir)
    assert code == 1 and "KVP value is 1023 bytes, limit 1022 (pool 1)" in err
    assert run(capsys, "set", "k", "v" * 1023, "--unsafe", "--pool-dir", pooldir)[0] == 0
    code, _, err = run(capsys, "set", "k", "v" * 2048, "--unsafe", "--pool-dir", pooldir)
    assert code == 1 and "limit 2047" in err


def test_unsafe_sizes_from_config(capsys, pooldir, tmp_path):
    cfg = tmp_path / "hvguest.yaml"
    cfg.write_text("kvp:\n  unsafe_sizes: true\n")
    argv = ["set", "k", "v" * 1500, "--config", str(cfg), "--pool-dir", pooldir]
    assert run(capsys, *argv)[0] == 0


def test_bad_pool_is_a_usage_error(capsys, pooldir):
    with pytest.raises(SystemExit) as exc:
        main(["kvp", "list", "--pool", "5", "--pool-dir", pooldir])
    assert exc.value.code == 2


def test_watch_prints_changes():
    old = [("a", "1"), ("b", "2")]
    new = [("a", "1"), ("b", "3"), ("c", "4")]
    lines = diff_items(1, old, new)
    assert [line.split(" ", 1)[1] for line in lines] == ["pool 1 ~ b=3", "pool 1 + c=4"]
    assert diff_items(0, old, [])[-1].endswith("pool 0 - b")


def test_reading_creates_nothing(capsys, tmp_path):
    pooldir = str(tmp_path / "absent")
    assert run(capsys, "list", "--pool-dir", pooldir)[0] == 0
    assert run(capsys, "get", "k", "--pool-dir", pooldir)[0] == 1
    assert run(capsys, "delete", "k", "--pool-dir", pooldir)[0] == 0
    import os

    assert not os.path.exists(pooldir)


def test_watch_reports_another_writers_change(capsys, pooldir):
    import threading
    import time

    from hvguest.paths import Paths

    assert run(capsys, "set", "a", "1", "--pool-dir", pooldir)[0] == 0
    pf = POOLS.open(Paths(pool_dir=pooldir), 1)

    def writer():
        time.sleep(0.15)
        pf.set("a", "2")
        pf.set("b", "3")

    thread = threading.Thread(target=writer)
    thread.start()
    argv = ["watch", "--pool", "1", "--interval", "0.1", "--count", "5", "--pool-dir", pooldir]
    code, out, _ = run(capsys, *argv)
    thread.join()
    assert code == 0
    lines = [line.split(" ", 1)[1] for line in out.splitlines()]
    assert "pool 1 ~ a=2" in lines and "pool 1 + b=3" in lines


def test_list_generated_auto_items(capsys, pooldir, monkeypatch):
    from hvguest.kvp import autopool

    monkeypatch.setattr(autopool, "canonical_name", lambda host: host + ".example")

    class NoNet:
        def snapshot(self):
            from hvguest.kvp.netlink import Snapshot

            return Snapshot()

    monkeypatch.setattr(autopool, "NetlinkReader", NoNet)
    code, out, _ = run(
        capsys, "list", "--pool", "2", "--generated", "--json", "--pool-dir", pooldir
    )
    assert code == 0
    generated = json.loads(out)["pools"]["2"]["generated"]
    assert [g["key"] for g in generated][:2] == [
        "FullyQualifiedDomainName",
        "IntegrationServicesVersion",
    ]
    assert generated[0]["value"].endswith(".example")
