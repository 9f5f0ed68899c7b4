"""``iotpush serve``: run the receiver.

Each option is one `_setting` line below: its group, flag and type. Its default is `Config`'s,
its variable ``IOTPUSH_SERVE_<NAME>`` and its configuration-file key ``[group] name``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from ..server import Config, run
from ._settings import Setting, SettingArgument, SettingsCommand, config_option
from ._shared import COUNT, DURATION, STORE_HELP, library_errors

GROUPS = {
    "network": "Network",
    "tls": "TLS",
    "store": "Store",
    "delivery": "Delivery",
    "security": "Security",
    "limits": "Limits",
    "sinks": "Sinks",
    "logging": "Logging",
    "monitoring": "Monitoring",
}
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Config)}
PORT = click.IntRange(0, 65535)
AT_LEAST_ONE = click.IntRange(min=1)


class _Token(click.ParamType):  # type: ignore[type-arg]
    """A bearer token: 16 characters or more (never echoed in an error)."""

    name = "token"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if len(value) < 16:
            self.fail(f"a token must have at least 16 characters, not {len(value)}", param, ctx)
        return str(value)


def _setting(group: str, *decls: str, **attrs: Any) -> Setting:
    """A ``serve`` option in ``group``, with `Config`'s default unless ``default`` is given."""
    name = next((d for d in decls if not d.startswith("-")), None)
    name = name or decls[0].split("/")[0].lstrip("-").replace("-", "_")
    if "default" not in attrs:
        default = _DEFAULTS[name]
        attrs["default"] = 0 if default is None and attrs.get("zero_is_off") else default
    return Setting(decls, group=group, **attrs)


def _count(group: str, flag: str, help: str, *, zero_is_off: bool = False) -> Setting:
    """A count of 0 or more."""
    return _setting(group, flag, type=COUNT, help=help, zero_is_off=zero_is_off)


RECEIVER = SettingArgument(
    ["receiver"],
    required=False,
    group="delivery",
    envvar="IOTPUSH_SERVE_RECEIVER",
    help="Your handlers, MODULE:ATTR; without, notifications are printed as JSON lines.",
)
SETTINGS: list[click.Parameter] = [
    config_option(),
    # network
    _setting("network", "--host", help="Address to listen on (0.0.0.0 for all)."),
    _setting("network", "--port", type=PORT, help="Port to listen on (0: any free one)."),
    _setting("network", "--path", help="The callback URL's path."),
    _setting("network", "--command-path", help="NB-IoT command status path [default: PATH/cmd]."),
    _setting("network", "--v5-path", help="The v5 data-forwarding push path."),
    _setting(
        "network",
        "--reuse-port",
        is_flag=True,
        help="Let several servers listen on one port (SO_REUSEPORT); needs a PostgreSQL store.",
    ),
    # tls
    _setting("tls", "--ssl-certfile", help="Serve HTTPS with this certificate (PEM)."),
    _setting("tls", "--ssl-keyfile", help="The certificate's private key (PEM)."),
    _setting("tls", "--ssl-ca-certs", help="CA bundle to verify client certificates with."),
    _setting(
        "tls",
        "--ssl-cert-reqs",
        type=click.Choice(["none", "optional", "required"]),
        help="Whether clients must present a certificate signed by --ssl-ca-certs.",
    ),
    # store
    _setting("store", "--store", envvar="IOTPUSH_STORE", help=STORE_HELP),
    _setting(
        "store",
        "--synchronous",
        type=click.Choice(["OFF", "NORMAL", "FULL", "EXTRA"], case_sensitive=False),
        help="SQLite durability: FULL survives power loss, NORMAL a crash.",
    ),
    _setting("store", "--dedupe-window", type=DURATION, help="How long duplicates are recognised."),
    _setting(
        "store",
        "--db-timeout",
        type=DURATION,
        help="Longest wait for PostgreSQL on the receive path; then 503 with Retry-After.",
    ),
    _setting(
        "store",
        "--retention",
        type=DURATION,
        zero_is_off=True,
        help="Keep delivered entries and tracker histories this long, then purge them"
        " (each thing's current state stays; 0: keep everything).",
    ),
    _setting(
        "store",
        "--finished-retention",
        type=DURATION,
        zero_is_off=True,
        help="Keep each finished record (a terminal command, an upgrade with a result, a deleted"
        " device...) this long after it was last heard of, then delete it with its history"
        " (not less than --retention; 0: keep them).",
    ),
    _setting(
        "store",
        "--purge-interval",
        type=DURATION,
        help="How often to purge what is older than --retention, in short transactions.",
    ),
    # delivery
    _setting(
        "delivery", "--concurrency", type=AT_LEAST_ONE, help="Deliveries to handlers at once."
    ),
    _setting(
        "delivery",
        "--max-attempts",
        type=AT_LEAST_ONE,
        help="Attempts before an entry is dead-lettered.",
    ),
    _setting("delivery", "--backoff", type=DURATION, help="Wait before the first retry (doubles)."),
    _setting(
        "delivery", "--handler-timeout", type=DURATION, help="Time limit of one handler call."
    ),
    _setting(
        "delivery",
        "--lease",
        type=DURATION,
        help="How long a claim lasts unrenewed: another server takes over a dead one's work after.",
    ),
    _setting(
        "delivery",
        "--watch-interval",
        type=DURATION,
        help="How often to look for overdue commands.",
    ),
    # security
    _setting(
        "security",
        "--api-token",
        "api_tokens",
        type=_Token(),
        multiple=True,
        secret=True,
        help="Bearer token for the query API (repeatable); required off loopback.",
    ),
    _setting("security", "--console/--no-console", help="Serve the web console at /ui/."),
    _setting(
        "security",
        "--console-token",
        "console_tokens",
        type=_Token(),
        multiple=True,
        secret=True,
        help="Token to log in to the console with (repeatable) [default: the --api-token ones];"
        " without any, the console answers loopback clients only.",
    ),
    _setting(
        "security",
        "--path-token",
        metavar="TOKEN",
        secret=True,
        help="Serve the receive paths under /TOKEN (16+ letters, digits, - . _ ~).",
    ),
    _setting(
        "security",
        "--allow-ip",
        "allow_ips",
        metavar="CIDR",
        multiple=True,
        help="Answer only this address or CIDR network, on every path (repeatable).",
    ),
    _setting(
        "security",
        "--api-allow-ip",
        "api_allow_ips",
        metavar="CIDR",
        multiple=True,
        help="Answer /api/ and /openapi.json from these clients instead (repeatable).",
    ),
    _setting(
        "security",
        "--trusted-proxy",
        "trusted_proxies",
        metavar="CIDR",
        multiple=True,
        help="A proxy (address or CIDR) whose X-Forwarded-For --allow-ip believes (repeatable).",
    ),
    _setting(
        "security",
        "--signing-secret",
        "signing_secrets",
        metavar="SECRET",
        multiple=True,
        secret=True,
        help="Require Standard Webhooks signatures by this whsec_... or text secret (repeatable).",
    ),
    _setting(
        "security",
        "--signature-tolerance",
        type=DURATION,
        help="How far a signature's webhook-timestamp may be from now.",
    ),
    # limits
    _setting("limits", "--max-body", type=AT_LEAST_ONE, help="Largest body accepted, in bytes."),
    _count("limits", "--max-depth", "Deepest JSON nesting of a body (0: any)."),
    _count("limits", "--max-members", "Most members of a JSON object or array (0: any)."),
    _count("limits", "--max-string", "Longest JSON string, in characters (0: any)."),
    _count(
        "limits",
        "--max-in-flight",
        "Pushes received at once; beyond, 503 (0: any).",
        zero_is_off=True,
    ),
    _count(
        "limits",
        "--max-pending-writes",
        "Pushes queued for the SQLite inbox; beyond, 503 (0: any).",
        zero_is_off=True,
    ),
    _setting(
        "limits",
        "--body-timeout",
        type=DURATION,
        zero_is_off=True,
        help="Time a body may take; then 408 (0: any).",
    ),
    _setting(
        "limits",
        "--header-timeout",
        type=DURATION,
        zero_is_off=True,
        help="Time a request's headers may take; then the connection is closed (0: any).",
    ),
    _setting(
        "limits",
        "--keep-alive-timeout",
        type=AT_LEAST_ONE,
        help="Seconds an idle connection is kept open.",
    ),
    _count(
        "limits",
        "--limit-concurrency",
        "Connections and requests at once; beyond, uvicorn answers 503 (0: any).",
        zero_is_off=True,
    ),
    _count(
        "limits",
        "--quarantine-max-rows",
        "Refused bodies kept; beyond, the oldest are deleted (0: all).",
        zero_is_off=True,
    ),
    _count("limits", "--quarantine-max-body", "Bytes kept of each refused body (0: all)."),
    # sinks
    _setting(
        "sinks",
        "--sink",
        "sinks",
        metavar="URL",
        multiple=True,
        help="Also publish every kept notification to NATS JetStream: nats://HOST:PORT"
        "[?stream=IOTPUSH&prefix=iotpush] (repeatable; needs iotpush[nats]).",
    ),
    # logging
    _setting(
        "logging",
        "--log-level",
        type=click.Choice(["critical", "error", "warning", "info", "debug"]),
        help="The least severe messages logged.",
    ),
    _setting("logging", "--access-log/--no-access-log", help="Log every request."),
    _setting(
        "logging",
        "--log-format",
        type=click.Choice(["text", "json"]),
        help="Log lines as text (ISO 8601 time, level, logger) or one JSON object each.",
    ),
    # monitoring
    _setting("monitoring", "--metrics/--no-metrics", help="Serve Prometheus metrics at /metrics."),
    _count(
        "monitoring",
        "--ready-max-backlog",
        "Most entries a sink's outbox may hold for /health/ready.",
    ),
    _count(
        "monitoring",
        "--alert-failures-in-a-row",
        "Failed answers in a row that log an ERROR; the platform gives up after 10 (0: never).",
    ),
    _setting(
        "monitoring",
        "--alert-no-push-for",
        type=DURATION,
        zero_is_off=True,
        help="Log a warning when no push arrived for this long (0: never).",
    ),
]


def _serve(receiver: str | None, **options: Any) -> None:
    options["synchronous"] = options["synchronous"].upper()
    with library_errors():
        run(Config(receiver=receiver, **options))


serve = SettingsCommand(
    "serve",
    params=[RECEIVER, *SETTINGS],
    callback=_serve,
    groups=GROUPS,
    help="Run the receiver. Every option has a variable (shown) and a key in the --config file:"
    " its name in the table of its group (port = 8080 under [network]). The command line wins"
    " over the environment, the environment over the file, the file over the defaults.",
)
