"""Hostile or broken configuration files: every failure is a ConfigError naming the file.

Each case below escaped load_config/validate_config (RecursionError, ValueError), was
read without bound, or blocked, before the loader bounded its input.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from hvguest.config import load_config, validate_config
from hvguest.configbounds import MAX_DEPTH
from hvguest.configfile import MAX_CONFIG_BYTES
from hvguest.errors import ConfigError

BILLION_LAUGHS = "\n".join(
    ["kvp:", '  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    + ["  exclude_nics: *a9", ""]
)

CASES = {
    "deep_flow": "kvp:\n  exclude_nics: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep_block": "".join("  " * i + f"k{i}:\n" for i in range(3000)),
    "deep_mapping": "kvp:\n  exclude_nics: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "huge_integer": "kvp:\n  republish_interval: " + "1" * 5000 + "\n",
    "billion_laughs": BILLION_LAUGHS,
    "recursive_alias": "kvp: &k\n  exclude_nics: &n [*n]\n",
    "latin1": "log:\n  level: d\xe9bug\n",
    "nul_byte": "log:\n  level: info\0\n",
}


def _write(tmp_path: Any, name: str, text: str) -> str:
    path = str(tmp_path / f"{name}.yaml")
    with open(path, "wb") as f:
        f.write(text.encode("latin-1" if name == "latin1" else "utf-8"))
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_raises_config_error_naming_the_file(tmp_path: Any, name: str) -> None:
    path = _write(tmp_path, name, CASES[name])
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(path), str(exc.value)[:300]
    assert len(str(exc.value)) < 600  # one readable line, not the document echoed


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_lists_the_problem(tmp_path: Any, name: str) -> None:
    path = _write(tmp_path, name, CASES[name])
    problems = validate_config(path)
    assert problems and all(p.startswith(path) for p in problems), problems[:3]


def test_bounds_are_named(tmp_path: Any) -> None:
    deep = _write(tmp_path, "deep", "kvp:\n  exclude_nics: " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_config(deep)
    laughs = _write(tmp_path, "laughs", BILLION_LAUGHS)
    with pytest.raises(ConfigError, match="aliases"):
        load_config(laughs)


def test_huge_file_is_not_read(tmp_path: Any) -> None:
    path = str(tmp_path / "huge.yaml")
    with open(path, "wb") as f:
        f.write(b"# comment\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=f"larger than {MAX_CONFIG_BYTES} bytes"):
        load_config(path)
    assert validate_config(path)[0].startswith(path)


def test_fifo_does_not_block(tmp_path: Any) -> None:
    path = str(tmp_path / "fifo.yaml")
    os.mkfifo(path)
    result: list[object] = []

    def load() -> None:
        try:
            load_config(path)
        except ConfigError as exc:
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():
        # Unblock the open() of the old code so the thread ends, then fail.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail("load_config blocked on a FIFO")
    assert result and "not a regular file" in str(result[0])


def test_usual_anchor_use_still_loads(tmp_path: Any) -> None:
    # A few aliases (reusing a list) are legitimate YAML and stay accepted.
    path = _write(tmp_path, "ok", "kvp:\n  exclude_nics: &x [lo, veth*]\n"
                  "  primary_nics: [eth0]\n")
    cfg = load_config(path)
    assert cfg.section("kvp").exclude_nics == ["lo", "veth*"]
