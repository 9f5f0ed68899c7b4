"""``iotpush send`` and ``iotpush examples``: bodies as the platform sends them."""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path
from typing import Any, Literal

import click

from ..models import NOTIFICATION_TYPES
from ..v5 import PAIRS
from ._shared import TYPE_CHOICE


@click.command()
@click.argument("kind")
@click.option(
    "--url", default="http://127.0.0.1:8080/v1.0.0/messageReceiver", help="Callback URL to post to."
)
@click.option("--count", default=1, type=int, help="How many notifications to post.")
@click.option(
    "--rate",
    default=None,
    type=float,
    help="Notifications per second (default: as fast as possible).",
)
@click.option("--concurrency", default=1, type=int, help="Requests in flight at once.")
@click.option(
    "--device", default=None, help="Device id to use (default: a new one per notification)."
)
@click.option(
    "--cacert",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate (PEM) to verify an HTTPS server with.",
)
@click.option("--insecure", is_flag=True, help="Do not verify an HTTPS server's certificate.")
@click.option("--path-token", default=None, help="The server's secret path token.")
@click.option(
    "--signing-secret", default=None, help="Sign each push as Standard Webhooks does (whsec_...)."
)
@click.option(
    "--as-platform",
    "as_platform",
    type=click.Choice(["legacy", "v5"]),
    default=None,
    help="Deliver as the platform does: a 15 s deadline, v5 discards a failed push and legacy "
    "re-pushes it, 10 failures in a row blacklist the URL (probed every 3 min), the backlog is "
    "drained at the flow-control rate. Reports delivered, discarded and held back.",
)
@click.option(
    "--scale",
    default=1.0,
    type=click.FloatRange(min=0, min_open=True),
    help="With --as-platform: divide the probe interval (60: every 3 s).",
)
@click.option(
    "--drain-rate",
    default=800.0,
    type=click.FloatRange(min=0, min_open=True),
    help="With --as-platform: pushes per second when draining the backlog.",
)
def send(
    kind: str, url: str, count: int, rate: float | None, concurrency: int, device: str | None,
    cacert: str | None, insecure: bool, path_token: str | None, signing_secret: str | None,
    as_platform: Literal["legacy", "v5"] | None, scale: float, drain_rate: float,
) -> None:  # fmt: skip
    """Post notifications as the platform does. KIND: a notifyType, a v5 pair
    (device.property:report), 'mix' (every legacy type), 'mix-v5' (every v5 pair), or a JSON file.

    Each notification is new (fresh ids and times) unless a FILE is sent, which is posted as is.
    v5 pushes posted to the legacy path are recognised there too. Failed requests are described
    (the first few distinct ones): an answer with its status and body, or the transport error
    with its cause.
    """
    from .. import access, testing

    if signing_secret is not None:
        try:
            access.decode_secret(signing_secret)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--signing-secret") from None
    verify: ssl.SSLContext | bool = not insecure
    if cacert is not None:
        if insecure:
            raise click.UsageError("--cacert and --insecure contradict each other")
        try:
            verify = ssl.create_default_context(cafile=cacert)
        except ssl.SSLError as exc:
            raise click.BadParameter(
                f"not a PEM CA certificate: {exc}", param_hint="--cacert"
            ) from None

    mixes = {"mix": list(NOTIFICATION_TYPES), "mix-v5": list(PAIRS)}
    if kind in NOTIFICATION_TYPES or kind in PAIRS or kind in mixes:
        kinds = mixes.get(kind, [kind])

        def make(i: int) -> Any:
            chosen = kinds[i % len(kinds)]
            if chosen in PAIRS:
                extra: dict[str, Any] = {}
                if device and not chosen.startswith(("batchtask:", "product:")):  # device pairs
                    extra["notify_data"] = {"header": {"device_id": device, "gateway_id": device}}
                return testing.build(chosen, **extra)
            fields = NOTIFICATION_TYPES[chosen].__struct_fields__
            # One device: directly connected, so its gateway is itself (as in the spec examples).
            overrides: dict[str, Any] = {
                name: device for name in ("device_id", "gateway_id") if device and name in fields
            }
            return testing.build(chosen, **overrides)

        bodies: Any = make
    elif Path(kind).is_file():
        bodies = [Path(kind).read_bytes()]
    else:
        raise click.BadParameter(f"{kind!r} is neither a notifyType nor a file", param_hint="KIND")
    if as_platform is not None:
        from ..platform import DeliveryRules, push_as_platform

        if signing_secret is not None:
            raise click.UsageError("--as-platform sends no signature (the platform signs nothing)")
        target = url if path_token is None else testing.with_path_token(url, path_token)
        rules = DeliveryRules(format=as_platform, scale=scale, drain_rate=drain_rate)
        encoded: Any = (lambda i: testing.encode(bodies(i))) if callable(bodies) else bodies
        result = asyncio.run(
            push_as_platform(target, encoded, count=count, rules=rules, rate=rate, verify=verify)
        )
        click.echo(str(result))
        sys.exit(0 if result.delivered == count else 1)
    report = asyncio.run(
        testing.send(
            url, bodies, count=count, rate=rate, concurrency=concurrency, verify=verify,
            path_token=path_token, signing_secret=signing_secret,
        )
    )  # fmt: skip
    click.echo(str(report))
    if report.ok < report.sent or report.errors:
        for description, n in report.failures.items():
            click.echo(f"  {n} x {description}", err=True)
        shown = sum(report.failures.values())
        if shown < report.sent - report.ok:
            click.echo(f"  {report.sent - report.ok - shown} x other failures", err=True)
        sys.exit(1)


@click.command()
@click.argument("kind", required=False, type=TYPE_CHOICE)
@click.option("--compact", is_flag=True, help="One line per body, as the platform sends it.")
def examples(kind: str | None, compact: bool) -> None:
    """Print an example body of KIND, or of every type (legacy, then v5)."""
    from .. import testing

    for name in [kind] if kind else [*NOTIFICATION_TYPES, *PAIRS]:
        body = testing.encode(testing.example(name), pretty=not compact)
        if not kind and not compact:
            click.echo(f"# {name}  (POST {testing.path_for(name)})")
        click.echo(body.decode())
