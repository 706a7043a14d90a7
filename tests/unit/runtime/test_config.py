"""Config loading: registry, types, bounds, errors with file:line, defaults text."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from hvguest import configsections
from hvguest.config import (
    Config,
    LogSettings,
    config_section,
    default_config_text,
    load_config,
    load_config_text,
    section_info,
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

    monkeypatch.setattr(configsections, "SECTIONS", (LogSettings, DemoSettings))
    global Demo
    Demo = DemoSettings
    yield


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


def test_every_settings_module_is_in_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    # A settings module left out of hvguest.configsections would make its section
    # "unknown" in every file that sets it: the list must name each one.
    monkeypatch.undo()
    root = os.path.dirname(os.path.abspath(configsections.__file__))
    declared = set()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    text = f.read()
                declared.update(re.findall(r'^@config_section\("([a-z_]+)"', text, re.M))
    assert declared == set(configsections.registered_sections())
    assert {"log", "kvp", "vss", "fcopy", "heartbeat"} <= declared


def test_section_must_be_marked() -> None:
    @dataclass(frozen=True)
    class Unmarked:
        x: int = 1

    with pytest.raises(TypeError, match="not marked with @config_section"):
        section_info(Unmarked)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "# only a comment\n",
        "   # indented comment\n#x: 1\n",
        "# accents é and 日本 and 😀\n",
        "#" + "a" * 5000 + "\n",
    ],
)
def test_comment_only_text_is_an_empty_document(text: str) -> None:
    from hvguest.config import only_comments

    assert only_comments(text)
    assert yaml.compose(text, Loader=yaml.SafeLoader) is None
    assert load_config_text(text).section("demo") == Demo()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# a\rx: 1\n", "unknown section 'x'"),  # a carriage return ends the comment
        ("# a\x85x: 1\n", "unknown section 'x'"),  # so does NEL for YAML
        ("# a\u2028x: 1\n", "unknown section 'x'"),
        ("# nul \x00 inside\n", "not valid YAML"),  # the reader refuses it, even here
        ("#ok\nx: 1 # not a comment line\n", "unknown section 'x'"),
    ],
)
def test_text_that_only_looks_like_comments_is_parsed(text: str, message: str) -> None:
    from hvguest.config import only_comments

    assert not only_comments(text)
    with pytest.raises(ConfigError, match=message):
        load_config_text(text)


def test_the_packaged_file_loads_without_the_yaml_parser(tmp_path: os.PathLike[str]) -> None:
    # Every daemon reads the packaged file (all comments): the parser and its 0.8 MB
    # stay out of memory until a setting is changed.
    import subprocess
    import sys

    path = os.path.join(str(tmp_path), "hvguest.yaml")
    with open(path, "w") as f:
        f.write(default_config_text())
    code = (
        "import sys\n"
        "from hvguest.config import load_config\n"
        f"assert load_config({path!r}).log.level == 'info'\n"
        "print(sorted(m for m in sys.modules if m == 'yaml' or m.startswith('yaml.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
