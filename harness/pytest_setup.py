"""Where pytest roots the run when a harness path option is given as a separate argument.

pytest determines its rootdir and reads its ini file before it loads plugins from their entry points, so at
that moment ``--report-dir /tmp/x`` is an unknown option followed by what looks like a test path: when
``/tmp/x`` exists, pytest roots the run there and, outside the project, does not read the project's ini file
at all (its ``addopts``, ``testpaths``, markers and ``harness_*`` settings), a known pytest limitation
(pytest-dev/pytest#8846). ``--report-dir=/tmp/x`` is not affected.

Once the plugin is loaded its options are known: :func:`correct_setup` (called from the plugin's
``pytest_load_initial_conftests``, before any conftest is read) determines the rootdir and ini file again
from the real test paths, the ones left once the option values are taken out, and where pytest guessed
otherwise, it puts the right ones in place with the ini file's ``addopts``. This touches pytest internals
(``Config._rootpath`` and friends, stable from pytest 8.4 to 9.2): where they differ, the run stops with a
usage error that says to write ``--OPTION=VALUE`` rather than run rooted in the wrong place.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from .options import VALUE_FLAGS


def separate_values(args: list[str]) -> list[tuple[str, str]]:
    """The harness options given as ``--option VALUE`` whose value names an existing file or folder: pytest
    takes those values for test paths when it roots the run."""
    found = []
    for flag, value in zip(args, args[1:]):
        if flag == "--":
            break
        if flag in VALUE_FLAGS and not value.startswith("-") and os.path.exists(os.path.expanduser(value)):
            found.append((flag, value))
    return found


def correct_setup(config: pytest.Config, args: list[str]) -> str | None:
    """Root the run where the real test paths say, if a harness option's separate value moved it; ``args`` is
    the list pytest is parsing (the ini file's addopts first). Returns a line saying what was corrected."""
    suspects = separate_values(args)
    if not suspects:
        return None
    from _pytest.config.findpaths import determine_setup

    old_addopts = list(config.getini("addopts"))
    given = args[len(old_addopts):] if args[:len(old_addopts)] == old_addopts else list(args)
    ns = config._parser.parse_known_args(given, namespace=copy.copy(config.option))
    flag, value = suspects[0]
    try:
        found = determine_setup(inifile=ns.inifilename, override_ini=ns.override_ini, args=ns.file_or_dir,
                                rootdir_cmd_arg=ns.rootdir or None, invocation_dir=config.invocation_params.dir)
        rootpath, inipath, inicfg = found[0], found[1], found[2]
        if (Path(rootpath), inipath) == (config.rootpath, config.inipath):
            return None
        _install(config, args, given, rootpath, inipath, inicfg, found[3] if len(found) > 3 else [])
    except (TypeError, AttributeError, IndexError) as exc:  # another pytest than this was written for
        raise pytest.UsageError(
            f"{flag} {value}: pytest {pytest.__version__} took {value} for a test path and rooted the run at "
            f"{config.rootpath} (ini file: {config.inipath}); write {flag}={value} instead ({exc})") from None
    return f"{flag} {value} is an option's value, not a test path: rootdir {rootpath}, ini file {inipath}"


def _install(config: pytest.Config, args: list[str], given: list[str], rootpath: Path, inipath: Path | None,
             inicfg: Any, ignored: Any) -> None:
    """What ``Config.parse`` did with the wrong ini file, done again with the right one."""
    from _pytest.config.findpaths import parse_override_ini

    cfg: Any = config
    cfg._rootpath, cfg._inipath, cfg._inicfg = Path(rootpath), inipath, inicfg
    cfg._ignored_config_files = ignored
    cfg._inicache.clear()
    cfg._parser.extra_info["rootdir"] = str(rootpath)
    cfg._parser.extra_info["inifile"] = str(inipath)
    args[:] = list(config.getini("addopts")) + given
    cfg.known_args_namespace = ns = cfg._parser.parse_known_args(args, namespace=copy.copy(config.option))
    overrides = parse_override_ini(ns.override_ini)
    if overrides:
        cfg._inicfg.update(overrides)
        cfg._inicache.clear()
    # plugins the right ini file's addopts enable or block (-p), its pythonpath, and where conftests stop
    config.pluginmanager.consider_preparse(args, exclude_only=False)
    if config.getini("pythonpath"):
        cfg._configure_python_path()
    if ns.confcutdir is None:
        ns.confcutdir = str(inipath.parent if inipath is not None else rootpath)
