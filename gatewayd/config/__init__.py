"""Configuration: TOML main file plus conf.d drop-ins, validated once, frozen."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gatewayd.config.schema import Config, parse_config
from gatewayd.config.section import Origins, Problems, Section
from gatewayd.errors import ConfigError, ConfigProblem

DEFAULT_PATH = Path("/etc/gatewayd/gatewayd.toml")

__all__ = ["Config", "DEFAULT_PATH", "load_config", "config_files"]


def config_files(main: Path) -> list[Path]:
    """The main file, then ``conf.d/*.toml`` beside it, in name order."""
    dropins = main.parent / "conf.d"
    files = [main]
    if dropins.is_dir():
        files += sorted(p for p in dropins.iterdir() if p.suffix == ".toml" and p.is_file())
    return files


def _merge(into: dict[str, Any], new: Mapping[str, Any], path: str, file: str,
           origins: Origins) -> None:
    """Deep-merge tables; any other value (arrays included) replaces the old one."""
    for key, value in new.items():
        key_path = f"{path}.{key}" if path else key
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            _merge(old, value, key_path, file, origins)
        else:
            into[key] = value
            _record(value, key_path, file, origins)


def _record(value: Any, path: str, file: str, origins: Origins) -> None:
    origins.by_path[path] = file
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, f"{path}.{k}", file, origins)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _record(v, f"{path}[{i}]", file, origins)


def load_config(main: Path = DEFAULT_PATH, env: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate the configuration.

    Raises ConfigError listing every problem, each naming its file and key path.
    """
    files = config_files(main)
    origins = Origins(default_file=str(main))
    merged: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for f in files:
        try:
            with f.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            problems.append(ConfigProblem(str(f), "", "file not found"))
            continue
        except PermissionError:
            problems.append(ConfigProblem(str(f), "", "permission denied"))
            continue
        except IsADirectoryError:
            problems.append(ConfigProblem(str(f), "", "is a directory, expected a TOML file"))
            continue
        except tomllib.TOMLDecodeError as err:
            problems.append(ConfigProblem(str(f), "", f"invalid TOML: {err}"))
            continue
        except UnicodeDecodeError as err:
            problems.append(ConfigProblem(str(f), "", f"invalid TOML: not UTF-8 text "
                                          f"(byte {err.start}: {err.reason})"))
            continue
        _merge(merged, data, "", str(f), origins)
    if problems:
        raise ConfigError(problems)
    collected = Problems(origins)
    config = parse_config(Section(merged, "", collected), env, tuple(str(f) for f in files))
    if collected.items:
        raise ConfigError(collected.items)
    return config
