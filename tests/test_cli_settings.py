"""``serve``'s settings: grouped help, validation when parsed, the config file, ``config show``."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from iotpush import Config
from iotpush.cli import main
from iotpush.cli import serve as serve_module
from iotpush.cli._settings import Setting, SettingArgument
from iotpush.cli.serve import GROUPS, serve

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "a-token-of-24-characters"
SETTINGS = [p for p in serve.params if isinstance(p, Setting | SettingArgument)]


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """The configs ``serve`` would run, instead of running them."""
    seen: list[Config] = []
    monkeypatch.setattr(serve_module, "run", seen.append)
    return seen


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def write(tmp_path: Path, text: str, name: str = "iotpush.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_serve_help_lists_each_option_in_its_group_with_its_variable() -> None:
    help_text = invoke("serve", "--help").output
    titles = [f"{title} ([{group}] in the configuration file):" for group, title in GROUPS.items()]
    positions = [help_text.index(title) for title in titles]
    assert positions == sorted(positions)
    flat = " ".join(help_text.split())  # the help wraps lines
    for setting in SETTINGS:
        at = positions[list(GROUPS).index(setting.group)]
        name = setting.opts[0] if isinstance(setting, Setting) else "[RECEIVER]"
        assert help_text.index(f"  {name}", at) < min(p for p in [*positions, 10**9] if p > at)
        assert f"env var: {setting.envvar}" in flat.replace("- ", "-")


def test_serve_options_are_all_settings() -> None:
    others = {p.name for p in serve.params if not isinstance(p, Setting | SettingArgument)}
    assert others == {"config"}  # every other option has a group, a variable and a key


def test_serve_without_options_runs_configs_defaults(configs: list[Config]) -> None:
    assert invoke("serve").exit_code == 0
    assert configs == [Config()]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "80000"], {}, "'--port'"),
        ([], {"IOTPUSH_SERVE_PORT": "-1"}, "'IOTPUSH_SERVE_PORT'"),
        (["--backoff", "soon"], {}, "'--backoff'"),
        (["--api-token", "short"], {}, "'--api-token'"),
        ([], {"IOTPUSH_SERVE_API_TOKEN": f"{TOKEN} short"}, "'IOTPUSH_SERVE_API_TOKEN'"),
        (["--concurrency", "0"], {}, "'--concurrency'"),
        (["--keep-alive-timeout", "0"], {}, "'--keep-alive-timeout'"),
        (["--retention", "a week"], {}, "'--retention'"),
        ([], {"IOTPUSH_SERVE_PURGE_INTERVAL": "often"}, "'IOTPUSH_SERVE_PURGE_INTERVAL'"),
    ],
    ids=["port", "port-variable", "duration", "api-token", "api-token-variable", "concurrency",
         "keep-alive", "retention", "purge-interval-variable"],
)  # fmt: skip
def test_serve_bad_option_value_is_refused_on_one_line_naming_it(
    configs: list[Config], args: list[str], env: dict[str, str], named: str
) -> None:
    result = invoke("serve", *args, env=env)
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: Invalid value for") and named in last
    assert "short" not in last  # a token, even a bad one, is never echoed
    assert configs == []


def test_serve_durations_take_milliseconds(configs: list[Config]) -> None:
    assert invoke("serve", "--backoff", "200ms", "--handler-timeout", "1500ms").exit_code == 0
    assert (configs[0].backoff, configs[0].handler_timeout) == (0.2, 1.5)


def test_serve_retention_takes_any_duration_and_0_keeps_everything(
    configs: list[Config],
) -> None:
    assert invoke("serve", "--retention", "30s", "--purge-interval", "5s").exit_code == 0
    assert invoke("serve", "--retention", "7d").exit_code == 0
    assert invoke("serve", "--retention", "0").exit_code == 0
    assert [(c.retention, c.purge_interval) for c in configs] == [
        (30.0, 5.0), (7 * 86400.0, 300.0), (None, 300.0),
    ]  # fmt: skip


def test_serve_finished_retention_takes_any_duration_and_0_keeps_them(
    tmp_path: Path, configs: list[Config]
) -> None:
    path = write(tmp_path, '[store]\nfinished_retention = "90d"\n')
    assert invoke("serve", "--finished-retention", "40s", "--retention", "30s").exit_code == 0
    assert invoke("serve", env={"IOTPUSH_SERVE_FINISHED_RETENTION": "0"}).exit_code == 0
    assert invoke("serve", "--config", path).exit_code == 0
    assert invoke("serve").exit_code == 0
    assert [c.finished_retention for c in configs] == [40.0, None, 90 * 86400.0, 30 * 86400.0]


def test_serve_finished_retention_shorter_than_retention_is_refused_on_one_line() -> None:
    result = invoke("config", "show", "--retention", "2d", "--finished-retention", "1d")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: --finished-retention (1d) must not be shorter than --retention (2d);"
        " 0 keeps finished records"
    )
    assert invoke("config", "show", "--retention", "0", "--finished-retention", "1s").exit_code == 0


def test_serve_purge_interval_0_is_refused_on_one_line() -> None:
    result = invoke("config", "show", "--purge-interval", "0")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: --purge-interval must be above 0"


def test_serve_settings_come_from_command_line_then_environment_then_file(
    tmp_path: Path, configs: list[Config]
) -> None:
    path = write(
        tmp_path,
        '[network]\nport = 9001\nhost = "::1"\npath = "/file"\n'
        '[delivery]\nreceiver = "tests.ledger_receiver:receiver"\nbackoff = "2s"\n'
        '[security]\nallow_ip = ["10.0.0.0/8"]\n[limits]\nbody_timeout = 0\n'
        "[logging]\naccess_log = true\n",
    )
    env = {"IOTPUSH_SERVE_PORT": "9002", "IOTPUSH_SERVE_HOST": "127.0.0.2"}
    assert invoke("serve", "--config", path, "--port", "9003", env=env).exit_code == 0
    assert invoke("serve", env={"IOTPUSH_CONFIG": path, **env}).exit_code == 0
    assert invoke("serve", env={"IOTPUSH_CONFIG": path}).exit_code == 0
    cli, environment, file = configs
    assert (cli.port, cli.host, cli.path) == (9003, "127.0.0.2", "/file")
    assert (environment.port, environment.host) == (9002, "127.0.0.2")
    assert (file.port, file.host, file.receiver, file.backoff) == (
        9001, "::1", "tests.ledger_receiver:receiver", 2.0)  # fmt: skip
    assert (file.allow_ips, file.body_timeout, file.access_log) == (("10.0.0.0/8",), None, True)
    assert file.replace(port=8080, host="127.0.0.1", path="/v1.0.0/messageReceiver",
                        receiver=None, backoff=1.0, allow_ips=(), body_timeout=30.0,
                        access_log=False) == Config()  # fmt: skip


def test_serve_secrets_come_from_the_files_their_keys_name(
    tmp_path: Path, configs: list[Config]
) -> None:
    tokens = write(tmp_path, f"{TOKEN}\n\nsecond-token-0123456789\n", "tokens")
    path_token = write(tmp_path, "path-token-0123456789\n", "path-token")
    path = write(
        tmp_path,
        f'[security]\napi_token_file = "{tokens}"\npath_token_file = "{path_token}"\n',
    )
    assert invoke("serve", "--config", path).exit_code == 0
    assert configs[0].api_tokens == (TOKEN, "second-token-0123456789")
    assert configs[0].path_token == "path-token-0123456789"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[network]\nport = "8080"\n', 'network.port: expected an integer, got a string ("8080")'),
        ("[network]\nport = 80000\n", "network.port: 80000 is not in the range 0<=x<=65535."),
        ("[network]\nprot = 1\n", "unknown key network.prot (did you mean port?); [network] "
                                  "takes host, port, path, command_path, v5_path, reuse_port"),
        ("[netwrk]\nport = 1\n", "unknown table [netwrk] (did you mean network?); expected "
                                 "[network], [tls], [store], [delivery], [security], [limits], "
                                 "[sinks], [logging]"),
        ("port = 1\n", "key port outside a table; it belongs in [network]"),
        ("[limits]\nbody_timeout = true\n", "limits.body_timeout: expected a duration (seconds, "
         'or a string such as "200ms", "30s", "15m", "48h"), got a boolean (true)'),
        ('[limits]\nbody_timeout = "soon"\n', "limits.body_timeout: expected a duration like "
         "200ms, 30s, 15m, 48h or 7d, got 'soon'"),
        ('[security]\nallow_ip = "10.0.0.0/8"\n', "security.allow_ip: expected an array of "
         'strings, got a string ("10.0.0.0/8")'),
        ('[security]\napi_token = ["short"]\n', "security.api_token: a token must have at least "
         "16 characters, not 5"),
        ('[logging]\nlog_level = "loud"\n', "logging.log_level: 'loud' is not one of 'critical', "),
        ('[security]\nhost_file = "x"\n', "unknown key security.host_file"),
        ('[security]\npath_token = "x"\npath_token_file = "x"\n', "security.path_token and "
         "security.path_token_file both given: keep one"),
        ('[security]\npath_token_file = "/nonexistent/token"\n', "security.path_token_file: "
         "cannot read /nonexistent/token: No such file or directory"),
        ("[network\n", "not valid TOML: Expected ']' at the end of a table declaration"),
    ],
    ids=["type", "range", "key", "table", "outside", "duration-type", "duration", "array",
         "token", "choice", "not-a-secret", "both", "missing-secret", "toml"],
)  # fmt: skip
def test_serve_bad_config_file_is_one_line_naming_file_and_key(
    tmp_path: Path, configs: list[Config], text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    result = invoke("serve", "--config", path)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}: {expected}")
    assert len(result.output.strip().splitlines()) == 1
    assert configs == []


def test_serve_missing_config_file_is_one_line(configs: list[Config]) -> None:
    result = invoke("serve", env={"IOTPUSH_CONFIG": "/nonexistent/iotpush.toml"})
    assert result.exit_code == 1
    assert (
        result.output
        == "Error: /nonexistent/iotpush.toml: cannot read: No such file or directory\n"
    )


def test_config_show_prints_each_value_with_its_source_and_masks_secrets(tmp_path: Path) -> None:
    tokens = write(tmp_path, f"{TOKEN}\n", "tokens")
    path = write(
        tmp_path,
        f'[network]\nport = 9001\n[security]\napi_token_file = "{tokens}"\n'
        '[store]\nstore = "postgresql://iotpush:hunter2@db/iotpush"\n',
    )
    env = {"IOTPUSH_SERVE_MAX_BODY": "512", "IOTPUSH_SERVE_SIGNING_SECRET": "a-signing-secret-0123"}
    result = invoke("config", "show", "--config", path, "--backoff", "3s", env=env)
    assert result.exit_code == 0, result.output
    lines = {
        line.split("=")[0].strip("# "): " ".join(line.split())
        for line in result.output.splitlines()
    }
    assert lines["port"] == f"port = 9001 # file {path}"
    assert lines["max_body"] == "max_body = 512 # environment IOTPUSH_SERVE_MAX_BODY"
    assert lines["backoff"] == 'backoff = "3s" # command line'
    assert lines["lease"] == 'lease = "1m" # default'
    assert lines["api_token"] == (
        f'api_token = ["********"] # file {tokens} (security.api_token_file in {path})'
    )
    assert lines["signing_secret"].startswith('signing_secret = ["********"] # environment')
    assert lines["store"].startswith('store = "postgresql://iotpush:********@db/iotpush"')
    assert lines["path_token"] == "# path_token = # not set (default)"
    for secret in (TOKEN, "a-signing-secret-0123", "hunter2"):
        assert secret not in result.output


def test_config_show_output_is_a_config_file_giving_the_same_settings(
    tmp_path: Path, configs: list[Config]
) -> None:
    options = ["--port", "9001", "--backoff", "250ms", "--allow-ip", "10.0.0.0/8",
               "--max-in-flight", "0", "--synchronous", "normal", "--access-log"]  # fmt: skip
    shown = invoke("config", "show", *options)
    assert shown.exit_code == 0, shown.output
    path = write(tmp_path, shown.output)
    assert invoke("serve", *options).exit_code == 0
    assert invoke("serve", "--config", path).exit_code == 0
    assert configs[0] == configs[1]


def test_config_show_refuses_settings_serve_refuses() -> None:
    result = invoke("config", "show", "--trusted-proxy", "127.0.0.1")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: --trusted-proxy needs --allow-ip (it only serves the allowlist)"
    )


# --- the example file -------------------------------------------------------------------------


def example_keys() -> dict[str, dict[str, object]]:
    """The keys of deploy/iotpush.toml, set or commented out (``# key = value``), by table."""
    tables: dict[str, dict[str, object]] = {}
    table: dict[str, object] = {}
    for line in (ROOT / "deploy" / "iotpush.toml").read_text().splitlines():
        if match := re.fullmatch(r"\[(\w+)\]", line):
            table = tables.setdefault(match[1], {})
        elif match := re.fullmatch(r"(?:# )?(\w+ = .*)", line):
            key, value = next(iter(tomllib.loads(match[1]).items()))
            table.setdefault(key, value)
    return tables


def test_example_config_file_loads_and_has_every_serve_option() -> None:
    result = invoke("config", "show", "--config", str(ROOT / "deploy" / "iotpush.toml"))
    assert result.exit_code == 0, result.output
    assert 'store = "sqlite:////var/lib/iotpush/iotpush.db"' in result.output
    keys = example_keys()
    assert list(keys) == list(GROUPS)
    secrets = {(s.group, f"{s.key}_file") for s in SETTINGS if s.secret}
    assert {(s.group, s.key) for s in SETTINGS} | secrets == {(g, k) for g in keys for k in keys[g]}


def test_example_config_file_comments_out_the_defaults() -> None:
    defaults = tomllib.loads(invoke("config", "show").output)
    example = tomllib.loads((ROOT / "deploy" / "iotpush.toml").read_text())
    for group, keys in example_keys().items():
        for key, value in keys.items():
            if key not in example[group] and defaults[group].get(key):
                assert value == defaults[group][key], f"{group}.{key}"


# --- the command ------------------------------------------------------------------------------


def test_python_m_iotpush_prints_the_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "iotpush", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out == f"iotpush, version {version('iotpush')}\n"
