"""``iotpush serve``: run the receiver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..server import Config, run
from ._shared import COUNT, DURATION, library_errors, store_option


def _zero_is_off(ctx: click.Context, param: click.Parameter, value: float) -> float | None:
    """0 turns a bound off: the library takes None for that."""
    return value or None


def _count_option(
    flag: str, default: int, help: str, *, zero_is_off: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An option that takes a count of 0 or more."""
    callback = _zero_is_off if zero_is_off else None
    return click.option(flag, default=default, type=COUNT, help=help, callback=callback)


@click.command()
@click.argument("receiver", required=False)
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8080, type=int, help="Port to listen on.")
@store_option
@click.option(
    "--synchronous",
    type=click.Choice(["OFF", "NORMAL", "FULL", "EXTRA"], case_sensitive=False),
    default="FULL",
    help="SQLite durability: FULL survives power loss, NORMAL a crash.",
)
@click.option("--path", default="/v1.0.0/messageReceiver", help="The callback URL's path.")
@click.option(
    "--command-path", default=None, help="NB-IoT command status path [default: PATH/cmd]."
)
@click.option("--max-body", default=1024 * 1024, type=int, help="Largest body accepted, in bytes.")
@click.option(
    "--dedupe-window", default="48h", type=DURATION, help="How long duplicates are recognised."
)
@click.option("--concurrency", default=32, type=int, help="Deliveries to handlers at once.")
@click.option(
    "--max-attempts", default=8, type=int, help="Attempts before an entry is dead-lettered."
)
@click.option(
    "--backoff", default="1s", type=DURATION, help="Wait before the first retry (doubles)."
)
@click.option(
    "--handler-timeout", default="60s", type=DURATION, help="Time limit of one handler call."
)
@click.option(
    "--watch-interval", default="5s", type=DURATION, help="How often to look for overdue commands."
)
@click.option(
    "--lease",
    default="60s",
    type=DURATION,
    help="How long a claim lasts unrenewed: another server takes over a dead one's work after.",
)
@click.option(
    "--sink",
    "sinks",
    metavar="URL",
    multiple=True,
    envvar="IOTPUSH_SERVE_SINK",
    help="Also publish every kept notification to NATS JetStream: nats://HOST:PORT"
    "[?stream=IOTPUSH&prefix=iotpush] (repeatable; needs iotpush[nats]).",
)
@click.option("--ssl-certfile", default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--ssl-keyfile", default=None, help="The certificate's private key (PEM).")
@click.option("--ssl-ca-certs", default=None, help="CA bundle to verify client certificates with.")
@click.option(
    "--ssl-cert-reqs",
    default="none",
    type=click.Choice(["none", "optional", "required"]),
    help="Whether clients must present a certificate signed by --ssl-ca-certs.",
)
@click.option(
    "--api-token",
    "api_tokens",
    multiple=True,
    envvar="IOTPUSH_SERVE_API_TOKEN",
    help="Bearer token for the query API (repeatable); required off loopback.",
)
@click.option(
    "--path-token",
    metavar="TOKEN",
    default=None,
    help="Serve the receive paths under /TOKEN (16+ letters, digits, - . _ ~).",
)
@click.option(
    "--allow-ip",
    "allow_ips",
    metavar="CIDR",
    multiple=True,
    envvar="IOTPUSH_SERVE_ALLOW_IP",
    help="Accept pushes only from this address or CIDR network (repeatable).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    metavar="CIDR",
    multiple=True,
    envvar="IOTPUSH_SERVE_TRUSTED_PROXY",
    help="A proxy (address or CIDR) whose X-Forwarded-For --allow-ip believes (repeatable).",
)
@click.option(
    "--signing-secret",
    "signing_secrets",
    metavar="SECRET",
    multiple=True,
    envvar="IOTPUSH_SERVE_SIGNING_SECRET",
    help="Require Standard Webhooks signatures by this whsec_... or text secret (repeatable).",
)
@click.option(
    "--signature-tolerance",
    default="5m",
    type=DURATION,
    help="How far a signature's webhook-timestamp may be from now.",
)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@_count_option("--max-depth", 32, "Deepest JSON nesting of a body (0: any).")
@_count_option("--max-members", 1000, "Most members of a JSON object or array (0: any).")
@_count_option("--max-string", 64 * 1024, "Longest JSON string, in characters (0: any).")
@_count_option(
    "--max-in-flight", 1000, "Pushes received at once; beyond, 503 (0: any).", zero_is_off=True
)
@_count_option(
    "--max-pending-writes",
    10_000,
    "Pushes queued for the SQLite inbox; beyond, 503 (0: any).",
    zero_is_off=True,
)
@click.option(
    "--body-timeout",
    default="30s",
    type=DURATION,
    callback=_zero_is_off,
    help="Time a body may take; then 408 (0: any).",
)
@click.option(
    "--header-timeout",
    default="30s",
    type=DURATION,
    callback=_zero_is_off,
    help="Time a request's headers may take; then the connection is closed (0: any).",
)
@click.option(
    "--keep-alive-timeout",
    default=5,
    type=click.IntRange(min=1),
    help="Seconds an idle connection is kept open.",
)
@_count_option(
    "--limit-concurrency",
    0,
    "Connections and requests at once; beyond, uvicorn answers 503 (0: any).",
    zero_is_off=True,
)
@_count_option(
    "--quarantine-max-rows",
    100_000,
    "Refused bodies kept; beyond, the oldest are deleted (0: all).",
    zero_is_off=True,
)
@_count_option("--quarantine-max-body", 64 * 1024, "Bytes kept of each refused body (0: all).")
@click.option(
    "--reuse-port",
    is_flag=True,
    help="Let several servers listen on one port (SO_REUSEPORT); needs a PostgreSQL store.",
)
def serve(receiver: str | None, **options: Any) -> None:
    """Run the receiver. RECEIVER is MODULE:ATTR; without one, notifications are printed as JSON."""
    options["synchronous"] = options["synchronous"].upper()
    with library_errors():
        run(Config(receiver=receiver, **options))
