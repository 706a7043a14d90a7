"""Config loading: registry, types, bounds, errors with file:line, defaults text."""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from hvguest import config as cfg
from hvguest.config import (
    Config,
    LogSettings,
    config_section,
    default_config_text,
    load_config,
    load_config_text,
    setting,
    validate_config,
)
from hvguest.errors import ConfigError


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


def _no_dots(value: str) -> str | None:
    return "must not contain '.'" if "." in value else None


@pytest.fixture(autouse=True)
def sections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Only the built-in log section and the demo below: the services' own
    # sections are tested with their services.
    saved = dict(cfg._SECTIONS)
    monkeypatch.setattr(cfg, "SECTION_MODULES", ())
    cfg._SECTIONS.clear()
    cfg._SECTIONS["log"] = saved["log"]

    @config_section("demo", help="A demonstration section")
    @dataclass(frozen=True)
    class DemoSettings:
        timeout: float = setting(30.0, help="seconds to wait", min=1, max=3600)
        retries: int = setting(3, min=0)
        enabled: bool = True
        name: str = setting("hvguest", validate=_no_dots)
        dirs: list[str] = setting(["/etc/hvguest/vss.d", "/usr/lib/hvguest/vss.d"])
        mode: Mode = Mode.SAFE
        limit: int | None = None
        env: dict[str, str] = setting({})

        def __post_init__(self) -> None:
            if self.retries > 5 and not self.enabled:
                raise ValueError("retries > 5 needs enabled: true")

    global Demo
    Demo = DemoSettings
    yield
    cfg._SECTIONS.clear()
    cfg._SECTIONS.update(saved)


Demo: type


def test_defaults_without_file() -> None:
    c = load_config(None)
    d = c.section("demo")
    assert d.timeout == 30.0 and d.retries == 3 and d.enabled is True
    assert d.dirs == ["/etc/hvguest/vss.d", "/usr/lib/hvguest/vss.d"]
    assert d.mode is Mode.SAFE and d.limit is None and d.env == {}
    assert c.get(Demo) is d
    assert c.log == LogSettings(level="info")


def test_missing_file_is_defaults(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "absent.yaml")
    assert load_config(path).section("demo").retries == 3
    with pytest.raises(ConfigError, match="no such file"):
        load_config(path, missing_ok=False)
    assert validate_config(path) == []


def test_values_are_converted() -> None:
    text = """\
log:
  level: debug
demo:
  timeout: 5            # an int is a fine float
  retries: 0
  enabled: no
  name: box
  dirs: [/a, /b]
  mode: fast
  limit: 10
  env: {A: "1"}
"""
    c = load_config_text(text, "h.yaml")
    d = c.section("demo")
    assert d.timeout == 5.0 and isinstance(d.timeout, float)
    assert d.enabled is False and d.dirs == ["/a", "/b"] and d.mode is Mode.FAST
    assert d.limit == 10 and d.env == {"A": "1"}
    assert c.log.level == "debug"
    assert c.where("demo", "mode") == "h.yaml:9"
    assert c.where("demo") == "h.yaml:3"
    assert c.where("demo", "retries") == "h.yaml:5"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("demo:\n  timeout: abc\n", 2, "demo.timeout: expected a number, got 'abc'"),
        ("demo:\n  timeout: 5000\n", 2, "demo.timeout: expected a value between 1 and 3600"),
        ("demo:\n\n  retries: -1\n", 3, "demo.retries: expected at least 0, got -1"),
        ("demo:\n  retries: 1.5\n", 2, "demo.retries: expected an integer"),
        ("demo:\n  enabled: 1\n", 2, "demo.enabled: expected true or false"),
        ("demo:\n  name: [12]\n", 2, "demo.name: expected a string"),
        ("demo:\n  name:\n", 2, "demo.name: expected a string"),
        ("demo:\n  name: a.b\n", 2, "demo.name: must not contain '.'"),
        ("demo:\n  dirs: /a\n", 2, "demo.dirs: expected a list of strings"),
        ("demo:\n  mode: turbo\n", 2, "demo.mode: expected one of fast, safe"),
        ("demo:\n  colour: red\n", 2, "demo: unknown key 'colour' (known: dirs, enabled"),
        ("x: 1\n", 1, "unknown section 'x' (known: demo, log"),
        ("demo:\n  retries: 1\n  retries: 2\n", 3, "demo.retries: given twice"),
        ("demo: 5\n", 1, "demo: expected a mapping of settings"),
        ("- a\n", 1, "expected a mapping of sections"),
        ("demo:\n  retries: 6\n  enabled: false\n", 2, "demo: retries > 5 needs enabled: true"),
        ("log:\n  level: loud\n", 2, "log.level: expected one of debug, info, warning, error"),
        ("demo:\n  timeout: [1\n", 3, "not valid YAML"),
    ],
)
def test_errors_name_file_line_and_expectation(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "/etc/hvguest/hvguest.yaml")
    assert exc.value.where == f"/etc/hvguest/hvguest.yaml:{line}"
    assert message in str(exc.value)
    assert str(exc.value).startswith(f"/etc/hvguest/hvguest.yaml:{line}: ")


def test_validate_collects_every_problem(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "h.yaml")
    with open(path, "w") as f:
        f.write("demo:\n  timeout: 0\n  bogus: 1\nnope: {}\n")
    problems = validate_config(path)
    assert problems == [
        f"{path}:2: demo.timeout: expected a value between 1 and 3600, got 0 (number)",
        f"{path}:3: demo: unknown key 'bogus' (known: dirs, enabled, env, limit, mode, name,"
        " retries, timeout)",
        f"{path}:4: unknown section 'nope' (known: demo, log)",
    ]


def test_unquoted_scalars_for_text_fields_keep_their_text() -> None:
    assert load_config_text("demo:\n  name: 0644\n").section("demo").name == "0644"
    assert load_config_text("demo:\n  name: 1000\n").section("demo").name == "1000"
    assert load_config_text("demo:\n  name: no\n").section("demo").name == "no"
    assert load_config_text("demo:\n  dirs: [1, on]\n").section("demo").dirs == ["1", "on"]
    with pytest.raises(ConfigError, match="expected an integer, got '1000x'"):
        load_config_text("demo:\n  retries: 1000x\n")


def test_empty_and_null_sections() -> None:
    assert load_config_text("").section("demo").retries == 3
    assert load_config_text("demo:\n").section("demo").retries == 3
    assert load_config_text("# only a comment\n").section("demo").retries == 3


def test_unknown_section_lookup() -> None:
    c = Config({})
    with pytest.raises(KeyError):
        c.section("nope")


def test_section_needs_defaults() -> None:
    with pytest.raises(TypeError, match="needs a default"):

        @config_section("broken")
        @dataclass(frozen=True)
        class Broken:
            x: int


def test_default_text_is_commented_yaml_that_round_trips() -> None:
    text = default_config_text()
    assert "# A demonstration section" in text
    assert "#demo:" in text and "#  timeout: 30.0" in text and "#  # seconds to wait" in text
    assert "#  mode: safe" in text
    assert all(line == "" or line.startswith("#") for line in text.splitlines())
    assert yaml.safe_load(text) is None
    uncommented = "\n".join(
        line[1:] for line in text.splitlines() if line.startswith("#") and not line.startswith("# ")
    )
    uncommented = "\n".join(
        line for line in uncommented.splitlines() if not line.lstrip().startswith("#")
    )
    c = load_config_text(uncommented)
    assert c.section("demo") == Demo()


def test_missing_section_modules_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cfg, "SECTION_MODULES", ("hvguest.no_such_module.settings",))
    cfg.load_section_modules()


def test_broken_section_module_is_not_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    pkg = os.path.join(str(tmp_path), "hvg_broken_pkg")
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w"):
        pass
    with open(os.path.join(pkg, "settings.py"), "w") as f:
        f.write("import hvguest_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cfg, "SECTION_MODULES", ("hvg_broken_pkg.settings",))
    with pytest.raises(ModuleNotFoundError):
        cfg.load_section_modules()
