from __future__ import annotations

import pytest

from iotpush import DeviceDataChanged, DeviceDeleted, Notification, Receiver
from iotpush.receiver import Handler


def test_receiver_on_class_and_string_runs_in_registration_order() -> None:
    receiver = Receiver()

    @receiver.on(DeviceDataChanged)
    def first(n: DeviceDataChanged) -> None: ...

    @receiver.on("deviceDataChanged", DeviceDeleted)
    async def second(n: Notification) -> None: ...

    @receiver.on()
    def everything(n: Notification) -> None: ...

    assert [h.func for h in receiver.handlers_for("deviceDataChanged")] == [
        first,
        second,
        everything,
    ]
    assert [h.func for h in receiver.handlers_for("deviceDeleted")] == [second, everything]
    assert [h.func for h in receiver.handlers_for("ruleEvent")] == [everything]


def test_receiver_added_handler_after_lookup_is_seen() -> None:
    receiver = Receiver()
    assert receiver.handlers_for("deviceDeleted") == ()
    receiver.add(print, DeviceDeleted)
    assert len(receiver.handlers_for("deviceDeleted")) == 1


@pytest.mark.parametrize(
    ("kind", "error"),
    [("deviceGone", ValueError), (int, TypeError), (Notification, TypeError)],
    ids=["unknown-string", "not-a-notification", "base-class"],
)
def test_receiver_on_bad_kind_raises(kind: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Receiver().on(kind)(print)  # type: ignore[arg-type]


def test_handler_wrap_detects_async_and_arguments() -> None:
    async def coro(n: Notification) -> None: ...

    def no_args() -> None: ...

    class Callable:
        async def __call__(self, n: Notification) -> None: ...

    assert Handler.wrap(coro).is_async
    assert Handler.wrap(Callable()).is_async
    assert Handler.wrap(no_args).argument == "none"
    assert Handler.wrap(coro, "body").argument == "body"
    assert not Handler.wrap(no_args).is_async
