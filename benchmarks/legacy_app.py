"""The legacy config: the vendor Python SDK's receiver pattern, re-created for comparison.

As in the SDK: a Flask app whose one view serves both callback paths, reads ``request.json``
and dispatches on ``notifyType`` with an if/elif chain to methods of a ``PushMessageReceiver``
that do nothing here. It keeps the SDK's defects on purpose, since they are what users ran:

* an NB-IoT command status (``/v1.0.0/messageReceiver/cmd``) has no ``notifyType``, so the view
  raises ``KeyError`` and the platform gets HTTP 500 (the benchmark counts these as errors);
* ``deviceModelDeleted`` goes to ``handleDeviceDeleted``;
* unknown types (``deviceCapabilities*``) get ``200 ok`` and reach no handler;
* nothing is stored: a notification is lost if the process dies while handling it.

Served as users served it: ``gunicorn -w 1 -k sync benchmarks.legacy_app:app``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

app = Flask(__name__)


class PushMessageReceiver:
    """One callback per notification type, as the SDK names them; each reads ``request.json``."""

    def handleBody(self) -> str:  # noqa: N802 - the SDK's names
        """Dispatch the current request to its callback; ``"ok"`` is the response body."""
        body: Any = request.json
        notify_type = body["notifyType"]  # KeyError -> 500 for NB-IoT command status
        if notify_type == "deviceAdded":
            self.handleDeviceAdded()
        elif notify_type == "bindDevice":
            self.handleBindDevice()
        elif notify_type == "deviceInfoChanged":
            self.handleDeviceInfoChanged()
        elif notify_type == "deviceDataChanged":
            self.handleDeviceDataChanged()
        elif notify_type == "deviceDatasChanged":
            self.handleDeviceDatasChanged()
        elif notify_type == "serviceInfoChanged":
            self.handleServiceInfoChanged()
        elif notify_type == "deviceDeleted":
            self.handleDeviceDeleted()
        elif notify_type == "messageConfirm":
            self.handleMessageConfirm()
        elif notify_type == "commandRsp":
            self.handleCommandRsp()
        elif notify_type == "deviceEvent":
            self.handleDeviceEvent()
        elif notify_type == "deviceModelAdded":
            self.handleDeviceModelAdded()
        elif notify_type == "deviceModelDeleted":
            self.handleDeviceDeleted()  # the SDK's wiring, kept
        elif notify_type == "ruleEvent":
            self.handleRuleEvent()
        elif notify_type == "deviceDesiredPropertiesModifyStatusChanged":
            self.handleDeviceDesiredStatusChanged()
        elif notify_type == "swUpgradeStateChangeNotify":
            self.handleSwUpgradeStateChanged()
        elif notify_type == "swUpgradeResultNotify":
            self.handleSwUpgradeResult()
        elif notify_type == "fwUpgradeStateChangeNotify":
            self.handleFwUpgradeStateChanged()
        elif notify_type == "fwUpgradeResultNotify":
            self.handleFwUpgradeResult()
        return "ok"

    # The application's callbacks; in the benchmark they do nothing, like iotpush's no-op handler.
    def handleDeviceAdded(self) -> None: ...  # noqa: N802
    def handleBindDevice(self) -> None: ...  # noqa: N802
    def handleDeviceInfoChanged(self) -> None: ...  # noqa: N802
    def handleDeviceDataChanged(self) -> None: ...  # noqa: N802
    def handleDeviceDatasChanged(self) -> None: ...  # noqa: N802
    def handleServiceInfoChanged(self) -> None: ...  # noqa: N802
    def handleDeviceDeleted(self) -> None: ...  # noqa: N802
    def handleMessageConfirm(self) -> None: ...  # noqa: N802
    def handleCommandRsp(self) -> None: ...  # noqa: N802
    def handleDeviceEvent(self) -> None: ...  # noqa: N802
    def handleDeviceModelAdded(self) -> None: ...  # noqa: N802
    def handleRuleEvent(self) -> None: ...  # noqa: N802
    def handleDeviceDesiredStatusChanged(self) -> None: ...  # noqa: N802
    def handleSwUpgradeStateChanged(self) -> None: ...  # noqa: N802
    def handleSwUpgradeResult(self) -> None: ...  # noqa: N802
    def handleFwUpgradeStateChanged(self) -> None: ...  # noqa: N802
    def handleFwUpgradeResult(self) -> None: ...  # noqa: N802


@app.route("/v1.0.0/messageReceiver", methods=["POST"])
@app.route("/v1.0.0/messageReceiver/cmd", methods=["POST"])  # same view, as the SDK had it
def receive() -> str:
    """Both callback paths: hand the request to a fresh receiver."""
    return PushMessageReceiver().handleBody()
