"""The freeze scripts other agents run, found where those agents look for them.

A machine moved to Hyper-V keeps the application-consistency scripts it had for
its former agent. hvguest-vssd runs them the way that agent did, after its own
``vss.d`` freeze hooks and before its own thaw hooks:

* open-vm-tools (vmbackup plugin): ``/usr/sbin/pre-freeze-script`` with
  ``freeze`` first, then every regular file of ``/etc/vmware-tools/backupScripts.d``
  in byte order with ``freeze``; at thaw the same list in reverse with ``thaw``
  (``/usr/sbin/post-thaw-script`` in the legacy slot). A script that fails or
  cannot be started fails the freeze; the scripts before it get ``freezeFail``,
  in reverse, and so do all of them when the freeze itself fails; a failing thaw
  script does not stop the others and is reported afterwards. No file name is
  ignored.
* qemu-guest-agent: the hook ``/etc/qemu/fsfreeze-hook`` (``/etc/qemu-ga/`` on
  RHEL) with ``freeze`` before and ``thaw`` after; a non-zero status of the hook
  fails the freeze, and a freeze that fails after it gives it ``thaw``. The
  stock hook is a dispatcher: it runs the executables of ``fsfreeze-hook.d`` in
  name order, for ``thaw`` in the same order, skipping backup and package
  leftovers, logs each status and always exits 0. hvguest runs such a
  directory's scripts itself (so each is checked), with the same rules; a hook
  that is not the dispatcher is run itself.
* Azure Backup (VMSnapshot extension): ``/etc/azure/VMSnapshotPluginConfig.json``
  names a pre- and a post-script with parameters, run as ``sh script params``;
  both must be regular files owned by root with no permission bits for group or
  others, or neither runs. ``timeoutInSeconds`` (default 30) bounds each;
  exit 0 or 2 (a warning) is success. On a failure (or a script refused),
  ``continueBackupOnFailure`` (default true) lets the backup go on without it;
  false fails the freeze. The post-script runs at thaw, and also when the
  freeze fails, whenever the pre-script was started. Its retry counts are not
  used: the extension never starts a script a second time either.

On top of each agent's own rules come hvguest's (``hookrun``): a script, and
every directory up to ``/``, must be root's and writable by nobody else, and is
never reached through a symbolic link. A script refused that way counts as one
that could not be started, under its convention's failure rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from dataclasses import dataclass, field

from hvguest import hookrun
from hvguest.paths import Paths
from hvguest.vss.settings import CONVENTIONS

AGENTS = {"vmware": "vmtoolsd", "qemu": "qemu-ga", "azure": "waagent"}
AZURE_TIMEOUT = 30.0  # the extension's documented default
TIMEOUT_MAX = 60.0  # no script beyond one hook phase (hvguest.vss.settings.HOOK_PHASE_MAX)
CONFIG_LIMIT = 64 * 1024
AZURE_SUCCESS = (0, 2)  # PrePost_ScriptStatus_Success, PrePost_ScriptStatus_Warning
# What the stock fsfreeze-hook skips (its is_ignored_file), besides dot files.
QEMU_IGNORED = ("~", ".bak", ".orig", ".rpmnew", ".rpmorig", ".rpmsave", ".sample",
                ".dpkg-old", ".dpkg-new", ".dpkg-tmp", ".dpkg-dist", ".dpkg-bak",
                ".dpkg-backup", ".dpkg-remove")


@dataclass(frozen=True)
class Call:
    """One run of one script: the program, its arguments, how it is started."""

    path: str
    args: tuple[str, ...]
    interpreter: str | None = None  # "sh": run as `sh script args` (Azure)
    refused: str | None = None  # why it may not run: counts as a failure to start

    def show(self) -> str:
        words = [self.interpreter] if self.interpreter else []
        return " ".join(shlex.quote(w) for w in [*words, self.path, *self.args])


@dataclass(frozen=True)
class ForeignHook:
    """One script (or script pair) of a convention and the rules it is run by."""

    convention: str
    name: str
    freeze: Call | None  # None: nothing to run at freeze, still owed its thaw
    thaw: Call | None
    fail: Call | None  # when the freeze fails after this hook's freeze
    aborts: bool = True  # a failing freeze call fails the backup
    fail_self: bool = False  # ``fail`` also when its own freeze call failed
    ok_codes: tuple[int, ...] = (0,)
    timeout: float | None = None  # the convention's own bound per script

    @property
    def label(self) -> str:
        return f"{self.convention}:{self.name}"


@dataclass(frozen=True)
class ForeignGroup:
    convention: str
    hooks: tuple[ForeignHook, ...]
    thaw_reversed: bool = True


@dataclass
class ForeignPlan:
    groups: list[ForeignGroup] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (convention, why)
    notes: list[str] = field(default_factory=list)  # warnings for the journal

    @property
    def hooks(self) -> list[ForeignHook]:
        return [h for g in self.groups for h in g.hooks]


def os_root(paths: Paths) -> str:
    """The system root the conventions' absolute paths live under."""
    return os.path.dirname(paths.os_etc.rstrip("/")) or "/"


def _under(paths: Paths, path: str) -> str:
    return os.path.join(os_root(paths), path.lstrip("/"))


def _problem(path: str, *, need_exec: bool = True) -> str | None:
    try:
        return hookrun.file_problem(path, need_exec=need_exec)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot check: {exc.strerror or exc}"


def _names(directory: str) -> tuple[str | None, list[str]]:
    """(refusal, entries in byte order) of a directory checked like a hook's."""
    try:
        resolved = hookrun.safe_directory(directory)
        return None, sorted(os.listdir(resolved), key=os.fsencode)
    except hookrun.Unsafe as exc:
        return f"not used: {exc}", []
    except OSError as exc:
        return f"cannot list: {exc.strerror or exc}", []


def _script_hook(convention: str, name: str, path: str, fail_arg: str,
                 *, aborts: bool = True) -> ForeignHook:
    """One script run with ``freeze`` and ``thaw``, and ``fail_arg`` when the freeze
    fails after it; refused for all three when it fails hookrun's checks."""
    problem = _problem(path)
    return ForeignHook(
        convention, name,
        Call(path, ("freeze",), refused=problem),
        Call(path, ("thaw",), refused=problem),
        Call(path, (fail_arg,), refused=problem),
        aborts=aborts,
    )


# -- open-vm-tools ------------------------------------------------------------------


def vmware(paths: Paths) -> ForeignGroup | None:
    legacy_freeze = _under(paths, "/usr/sbin/pre-freeze-script")
    legacy_thaw = _under(paths, "/usr/sbin/post-thaw-script")
    directory = os.path.join(paths.os_etc, "vmware-tools", "backupScripts.d")
    hooks: list[ForeignHook] = []
    # The agent tests "is a file" following links; hvguest then refuses a link.
    if os.path.isfile(legacy_freeze) or os.path.isfile(legacy_thaw):
        freeze = thaw = fail = None
        if os.path.isfile(legacy_freeze):
            freeze = Call(legacy_freeze, ("freeze",), refused=_problem(legacy_freeze))
        if os.path.isfile(legacy_thaw):
            problem = _problem(legacy_thaw)
            thaw = Call(legacy_thaw, ("thaw",), refused=problem)
            fail = Call(legacy_thaw, ("freezeFail",), refused=problem)
        hooks.append(ForeignHook("vmware", "pre-freeze-script", freeze, thaw, fail))
    if os.path.isdir(directory):
        refusal, names = _names(directory)
        if refusal is not None:
            hooks.append(ForeignHook("vmware", "backupScripts.d",
                                     Call(directory, ("freeze",), refused=refusal), None, None))
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                continue  # directories and devices: the agent skips them too
            hooks.append(_script_hook("vmware", name, path, "freezeFail"))
    return ForeignGroup("vmware", tuple(hooks)) if hooks else None


# -- qemu-guest-agent ---------------------------------------------------------------


def _is_dispatcher(hook: str) -> bool:
    """The stock fsfreeze-hook (it runs fsfreeze-hook.d), not a hook of one's own."""
    with contextlib.suppress(OSError):
        with open(hook, "rb") as f:
            return b"fsfreeze-hook.d" in f.read(CONFIG_LIMIT)
    return False


def qemu(paths: Paths) -> ForeignGroup | None:
    for base in ("qemu", "qemu-ga"):  # Debian's confdir, then RHEL's
        hook = os.path.join(paths.os_etc, base, "fsfreeze-hook")
        if os.path.lexists(hook):
            break
    else:
        return None
    own = _script_hook("qemu", f"{base}/fsfreeze-hook", hook, "thaw")
    if own.freeze is None or own.freeze.refused is not None or not _is_dispatcher(hook):
        # qemu-ga fails the freeze when it cannot run the hook.
        return ForeignGroup("qemu", (own,))
    directory = hook + ".d"
    if not os.path.isdir(directory):
        return None  # the dispatcher does nothing
    refusal, names = _names(directory)
    hooks: list[ForeignHook] = []
    if refusal is not None:
        hooks.append(ForeignHook("qemu", f"{base}/fsfreeze-hook.d",
                                 Call(directory, ("freeze",), refused=refusal), None, None,
                                 aborts=False))
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or name.endswith(QEMU_IGNORED):
            continue
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            continue  # the dispatcher's `[ -x ]`
        # aborts=False: the dispatcher logs a status and exits 0
        hooks.append(_script_hook("qemu", name, path, "thaw", aborts=False))
    return ForeignGroup("qemu", tuple(hooks), thaw_reversed=False) if hooks else None


# -- Azure Backup -------------------------------------------------------------------


class _BadConfig(ValueError):
    pass


def _params(doc: dict[str, object], key: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise _BadConfig(f"{key} must be a list of strings")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _BadConfig(f"{key} must be a list of strings, got {json.dumps(item)[:40]}")
        text = str(item)
        if "\0" in text:
            raise _BadConfig(f"{key}: a parameter holds a NUL character")
        out.append(text)
    return tuple(out)


def _script(paths: Paths, doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise _BadConfig(f"{key} must be an absolute path")
    return _under(paths, os.path.normpath(value))


def _azure_script_problem(path: str) -> str | None:
    problem = _problem(path, need_exec=False)
    if problem is not None:
        return problem
    mode = os.lstat(path).st_mode & 0o777
    if mode & 0o077:
        return f"has permissions for group or others (mode {mode:04o}; Azure Backup wants 0700)"
    return None


def azure(paths: Paths) -> ForeignGroup | None:
    config = os.path.join(paths.os_etc, "azure", "VMSnapshotPluginConfig.json")
    if not os.path.lexists(config):
        return None
    name = "VMSnapshotPluginConfig.json"
    problem = _problem(config, need_exec=False)
    cont = True
    try:
        if problem is not None:
            # It names what root runs: only root may have written it.
            raise _BadConfig(f"{config} {problem}")
        with open(config, "rb") as f:
            raw = f.read(CONFIG_LIMIT + 1)
        if len(raw) > CONFIG_LIMIT:
            raise _BadConfig(f"{config} is larger than {CONFIG_LIMIT} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _BadConfig(f"{config} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise _BadConfig(f"{config} must hold a JSON object")
        flag = doc.get("continueBackupOnFailure", True)
        if not isinstance(flag, bool):
            raise _BadConfig("continueBackupOnFailure must be true or false")
        cont = flag
        timeout = doc.get("timeoutInSeconds", AZURE_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise _BadConfig("timeoutInSeconds must be a positive number")
        pre = _script(paths, doc, "preScriptLocation")
        post = _script(paths, doc, "postScriptLocation")
        pre_args, post_args = _params(doc, "preScriptParams"), _params(doc, "postScriptParams")
        for which, path in (("preScriptLocation", pre), ("postScriptLocation", post)):
            bad = _azure_script_problem(path)
            if bad is not None:
                raise _BadConfig(f"{which} {path} {bad}")
    except _BadConfig as exc:
        # As the extension: neither script runs; the flag says whether the backup goes on.
        refused = Call(config, (), refused=str(exc))
        return ForeignGroup("azure", (ForeignHook("azure", name, refused, None, None,
                                                  aborts=not cont),))
    return ForeignGroup("azure", (ForeignHook(
        "azure", name,
        Call(pre, pre_args, interpreter="sh"),
        Call(post, post_args, interpreter="sh"),
        Call(post, post_args, interpreter="sh"),
        aborts=not cont, fail_self=True, ok_codes=AZURE_SUCCESS,
        timeout=min(float(timeout), TIMEOUT_MAX),
    ),))


FINDERS = {"vmware": vmware, "qemu": qemu, "azure": azure}


# -- which conventions run ----------------------------------------------------------


def running_agents(paths: Paths) -> set[str]:
    """The conventions whose own agent runs now (it runs its scripts itself)."""
    found: set[str] = set()
    try:
        entries = [e for e in os.listdir(paths.proc) if e.isdigit()]
    except OSError:
        return found
    wanted = {v: k for k, v in AGENTS.items()}
    for entry in entries:
        with contextlib.suppress(OSError):
            # The agents run as root; any user can name a process "qemu-ga", and
            # must not make hvguest skip the scripts that way.
            if os.stat(os.path.join(paths.proc, entry)).st_uid != 0:
                continue
            with open(os.path.join(paths.proc, entry, "cmdline"), "rb") as f:
                argv = [w.decode("utf-8", "replace") for w in f.read(4096).split(b"\0")]
            program = os.path.basename(argv[0])
            if program.startswith("python"):
                # waagent runs as `python3 -u /usr/sbin/waagent -daemon`
                program = next((os.path.basename(w) for w in argv[1:] if w[:1] != "-"), "")
            if program in wanted:
                found.add(wanted[program])
    return found


def discover_foreign(paths: Paths, setting: str | list[str]) -> ForeignPlan:
    plan = ForeignPlan()
    if setting == "none":
        return plan
    chosen = list(CONVENTIONS) if setting == "auto" else [c for c in CONVENTIONS if c in setting]
    running = running_agents(paths)
    for convention in chosen:
        group = FINDERS[convention](paths)
        if group is None:
            continue
        if convention in running:
            if setting == "auto":
                plan.skipped.append(
                    (convention, f"{AGENTS[convention]} runs, and runs these scripts itself"))
                continue
            plan.notes.append(f"{convention} freeze scripts run although {AGENTS[convention]}"
                              " runs too (vss.foreign_hooks names it)")
        plan.groups.append(group)
        for hook in group.hooks:
            for call in (hook.freeze, hook.thaw):
                if call is not None and call.refused is not None:
                    plan.notes.append(f"{hook.label}: {call.path} refused: {call.refused}")
                    break
    return plan
