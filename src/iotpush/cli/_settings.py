"""Options that are settings: each has a group, an environment variable and a configuration key.

A `Setting` is a ``click.Option`` declared once with its group; its variable
(``IOTPUSH_SERVE_<NAME>``) and its key in the configuration file (``[group] name``) follow from its
name. `SettingsCommand` lists them by group in ``--help``; `config_option` reads a TOML file into
the command's defaults, so that click resolves every value as: command line, then environment,
then file, then the option's default. `effective` says where each value came from.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .._when import format_duration
from ._shared import DURATION

__all__ = ["Setting", "SettingArgument", "SettingsCommand", "config_option", "effective"]

_SOURCES = "iotpush.file_sources"  # ctx.meta: parameter name -> the file (and key) it came from
MASK = "********"


def _zero_is_off(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """0 turns a bound off: the library takes None for that."""
    return value or None


class Setting(click.Option):
    """An option of ``group`` whose key is its name, and whose variable is ``PREFIX_NAME``.

    ``secret``: its value is masked when shown, and the file may name a file holding it
    (``NAME_file``, one value a line). ``zero_is_off``: 0 reaches the library as ``None``.
    """

    def __init__(
        self,
        param_decls: Sequence[str],
        *,
        group: str,
        prefix: str = "IOTPUSH_SERVE",
        secret: bool = False,
        zero_is_off: bool = False,
        **attrs: Any,
    ) -> None:
        if zero_is_off:
            attrs["callback"] = _zero_is_off
        if attrs.get("type") is DURATION and isinstance(attrs.get("default"), int | float):
            attrs["default"] = format_duration(attrs["default"])  # as help shows it
        super().__init__(param_decls, show_envvar=True, **attrs)
        self.group, self.secret, self.zero_is_off = group, secret, zero_is_off
        self.key = self.opts[0].lstrip("-").replace("-", "_")
        if self.envvar is None:
            self.envvar = f"{prefix}_{self.key.upper()}"


class SettingArgument(click.Argument):
    """A positional argument that is also a setting (``RECEIVER``): listed in its group."""

    def __init__(
        self, param_decls: Sequence[str], *, group: str, help: str, envvar: str, **attrs: Any
    ) -> None:
        super().__init__(param_decls, envvar=envvar, **attrs)
        self.group, self.help_text, self.secret, self.zero_is_off = group, help, False, False
        self.key = self.name or ""

    def help_record(self, ctx: click.Context) -> tuple[str, str]:
        return self.make_metavar(ctx), f"{self.help_text}  [env var: {self.envvar}]"


def _settings(command: click.Command) -> list[Setting | SettingArgument]:
    return [p for p in command.params if isinstance(p, Setting | SettingArgument)]


class SettingsCommand(click.Command):
    """A command whose ``--help`` lists its settings by group (``groups``: name -> title)."""

    def __init__(self, *args: Any, groups: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups = groups

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Arguments are listed with the options of their group."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records: dict[str, list[tuple[str, str]]] = {group: [] for group in self.groups}
        general: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            if isinstance(param, SettingArgument):
                records[param.group].insert(0, param.help_record(ctx))
            elif (record := param.get_help_record(ctx)) is not None:
                group = param.group if isinstance(param, Setting) else None
                (records[group] if group else general).append(record)
        with formatter.section("General"):
            formatter.write_dl(general)
        for group, title in self.groups.items():
            if records[group]:
                with formatter.section(f"{title} ([{group}] in the configuration file)"):
                    formatter.write_dl(records[group])


def _load(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        defaults, sources = read_file(Path(value), ctx)
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
        ctx.meta[_SOURCES] = sources
    return value


def config_option() -> click.Option:
    """``--config FILE`` (or ``IOTPUSH_CONFIG``), read before every other option."""
    return click.Option(
        ["--config"],
        metavar="FILE",
        envvar="IOTPUSH_CONFIG",
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_load,
        help="Read settings from this TOML file (command line and environment take precedence).",
    )


def read_file(path: Path, ctx: click.Context) -> tuple[dict[str, Any], dict[str, str]]:
    """The values a configuration file gives ``ctx.command``'s settings, and where each is from.

    Raises:
        click.ClickException: The file cannot be read, is not TOML, or has a key that is unknown
            or of the wrong type (naming the file, the key and what was expected).
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path}: not valid TOML: {exc}") from None
    assert isinstance(ctx.command, SettingsCommand)
    groups: dict[str, dict[str, Setting | SettingArgument]] = {g: {} for g in ctx.command.groups}
    for each in _settings(ctx.command):
        groups[each.group][each.key] = each
    defaults: dict[str, Any] = {}
    sources: dict[str, str] = {}
    tables = ", ".join(f"[{name}]" for name, keys in groups.items() if keys)
    for group, table in document.items():
        if not isinstance(table, dict):
            home = [name for name, keys in groups.items() if group in keys]
            where = f"; it belongs in [{home[0]}]" if home else f"; expected the tables {tables}"
            raise click.ClickException(f"{path}: key {group} outside a table{where}")
        if not groups.get(group):
            raise click.ClickException(
                f"{path}: unknown table [{group}]{_hint(group, groups)}; expected {tables}"
            )
        keys = groups[group]
        for key, value in table.items():
            name = f"{group}.{key}"
            setting = keys.get(key)
            secret = keys.get(key.removesuffix("_file")) if key.endswith("_file") else None
            if setting is None and secret is not None and secret.secret:
                if secret.key in table:
                    raise click.ClickException(
                        f"{path}: {group}.{secret.key} and {name} both given: keep one"
                    )
                setting, value = secret, _read_secret(path, name, value, secret.multiple)
                sources[secret.name or ""] = f"file {table[key]} ({name} in {path})"
            if setting is None:
                raise click.ClickException(
                    f"{path}: unknown key {name}{_hint(key, keys)}; [{group}] takes "
                    + ", ".join(keys)
                )
            defaults[setting.name or ""] = _convert(path, name, value, setting, ctx)
            sources.setdefault(setting.name or "", f"file {path}")
    return defaults, sources


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_secret(path: Path, name: str, value: Any, multiple: bool) -> Any:
    """The secret in the file ``value`` names: its stripped text, or its lines if ``multiple``."""
    if not isinstance(value, str):
        raise click.ClickException(f"{path}: {name}: expected a file name, got {_kind(value)}")
    try:
        text = Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise click.ClickException(f"{path}: {name}: cannot read {value}: {reason}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise click.ClickException(f"{path}: {name}: {value} is empty")
    if not multiple and len(lines) > 1:
        raise click.ClickException(f"{path}: {name}: {value} holds more than one line")
    return lines if multiple else lines[0]


def _expected(setting: click.Parameter) -> tuple[Callable[[Any], bool], str]:
    """A test of a TOML value's type for ``setting``, and what it expects in words."""
    if setting.multiple:
        return lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), (
            "an array of strings"
        )
    if isinstance(setting, click.Option) and setting.is_flag:
        return lambda v: isinstance(v, bool), "true or false"
    if setting.type is DURATION:
        return lambda v: isinstance(v, str | int | float) and not isinstance(v, bool), (
            'a duration (seconds, or a string such as "200ms", "30s", "15m", "48h")'
        )
    if isinstance(setting.type, click.types.IntParamType):
        return lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"
    if isinstance(setting.type, click.Choice):
        choices = ", ".join(f'"{c}"' for c in setting.type.choices)
        return lambda v: isinstance(v, str), f"one of {choices}"
    return lambda v: isinstance(v, str), "a string"


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kind = kinds.get(type(value), "an array" if isinstance(value, list) else "a table")
    return f"{kind} ({_toml(value)})" if type(value) in kinds else kind


def _convert(
    path: Path, name: str, value: Any, setting: click.Parameter, ctx: click.Context
) -> Any:
    """``value`` for ``setting`` as its type converts it, if TOML gave the expected type."""
    fits, expected = _expected(setting)
    if not fits(value):
        raise click.ClickException(f"{path}: {name}: expected {expected}, got {_kind(value)}")
    try:
        return setting.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise click.ClickException(f"{path}: {name}: {exc.message}") from None


def _toml(value: Any) -> str:
    """``value`` written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _shown(setting: Setting | SettingArgument, value: Any) -> Any:
    """``value`` as a configuration file writes it (durations in words, 0 for off, masked)."""
    if value is None and setting.zero_is_off:
        value = 0
    if setting.type is DURATION and isinstance(value, int | float):
        value = format_duration(value)
    if setting.secret and value:
        value = [MASK] * len(value) if setting.multiple else MASK
    if isinstance(value, tuple):
        return [_without_password(item) for item in value]
    return _without_password(value) if isinstance(value, str) else value


def _without_password(text: str) -> str:
    """``text`` with the password of a URL (``postgresql://user:pw@host/db``) masked."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or ":" not in userinfo or "/" in userinfo:
        return text
    return f"{scheme}://{userinfo.partition(':')[0]}:{MASK}@{host}"


def effective(ctx: click.Context) -> Iterator[str]:
    """The settings of ``ctx``'s command as a TOML file, each value with its source."""
    settings = _settings(ctx.command)
    assert isinstance(ctx.command, SettingsCommand)
    file_sources: dict[str, str] = ctx.meta.get(_SOURCES, {})
    yield "# Each value with where it came from: command line, environment, file or default."
    for group in ctx.command.groups:
        lines = []
        for setting in (s for s in settings if s.group == group):
            name = setting.name or ""
            match ctx.get_parameter_source(name):
                case ParameterSource.COMMANDLINE:
                    source = "command line"
                case ParameterSource.ENVIRONMENT:
                    source = f"environment {setting.envvar}"
                case ParameterSource.DEFAULT_MAP:
                    source = file_sources[name]
                case _:
                    source = "default"
            value = _shown(setting, ctx.params[name])
            if value is None:
                line, source = f"# {setting.key} =", f"not set ({source})"
            else:
                line = f"{setting.key} = {_toml(value)}"
            lines.append(f"{line:<48}  # {source}")
        if lines:
            yield f"[{group}]"
            yield from lines
            yield ""
