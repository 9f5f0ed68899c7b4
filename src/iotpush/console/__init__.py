"""The operator's web console at ``/ui/``: server-rendered pages of pushes, deliveries, devices.

Jinja2 templates and a few static files inside the package, nothing loaded from elsewhere. The
pages read through the same queries as the API (`Tracking`, the inbox's ``find`` and quarantine),
page with keyset cursors (never more than 200 rows a page), and work with JavaScript off; the
overview's script only swaps in fresh figures every 2 s. Access: see `iotpush.console._auth`.
"""

from __future__ import annotations

from ._app import Console, Retry

__all__ = ["Console", "Retry"]
