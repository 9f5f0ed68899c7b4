"""Generated input against the decoder and the whole receive path: never a crash, never a 5xx.

Every valid notification of every type, legacy and v5 (in any member order, pretty or compact,
with unknown members) is accepted; everything else (mutated notifications, random JSON, random
bytes) is refused with a 4xx that names a path. CI runs a bounded number of examples; set
``IOTPUSH_FUZZ_EXAMPLES=100000`` for the long campaign.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotpush import App, Notification, NotificationError, decode, testing
from iotpush.inbox.memory import MemoryInbox
from iotpush.v5 import PAIRS

EXAMPLES = int(os.environ.get("IOTPUSH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def valid_notifications(draw: st.DrawFn) -> tuple[str, bytes]:
    """A realistic notification of any type, re-encoded the many ways platforms send JSON."""
    kind = draw(st.sampled_from([*testing.ALL_KINDS, *PAIRS]))
    notification = testing.build(kind, seed=draw(st.integers(0, 2**32)))
    data: dict[str, Any] = json.loads(testing.encode(notification))
    extras = draw(st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=3))
    data.update({f"x-{k}": v for k, v in extras.items()})  # unknown members, never a known name
    order = draw(st.permutations(list(data)))
    indent = draw(st.sampled_from([None, 0, 2, 4]))
    body = json.dumps({k: data[k] for k in order}, indent=indent).encode()
    return testing.path_for(notification), body


@st.composite
def broken_notifications(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid notification with one thing wrong, or input that is no notification at all."""
    how = draw(st.sampled_from(["drop", "retype", "type", "array", "truncate", "json", "bytes"]))
    path, body = draw(valid_notifications())
    data = json.loads(body)
    if how == "bytes":
        return path, draw(st.binary(max_size=200))
    if how == "json":
        return path, json.dumps(draw(json_values)).encode()
    if how == "truncate":
        return path, body[: draw(st.integers(0, max(0, len(body) - 1)))]
    if how == "array":
        return path, json.dumps([data]).encode()
    if how == "type":
        tag = draw(st.sampled_from(["resource", "event"])) if "resource" in data else "notifyType"
        data[tag] = draw(st.text(max_size=30))
    else:
        key = draw(st.sampled_from(sorted(data)))
        if how == "drop":
            del data[key]
        else:
            data[key] = draw(json_values)
    return path, json.dumps(data).encode()


def route_of(path: str) -> Any:
    return "command" if path.endswith("/cmd") else "v5" if path.startswith("/v5/") else "notify"


@FUZZ
@given(valid_notifications())
def test_fuzz_decode_valid_notification_of_every_type_is_accepted(case: tuple[str, bytes]) -> None:
    path, body = case
    assert isinstance(decode(body, route_of(path)), Notification)


@FUZZ
@given(broken_notifications())
def test_fuzz_decode_anything_else_raises_only_notification_error(case: tuple[str, bytes]) -> None:
    path, body = case
    try:
        decode(body, route_of(path))
    except NotificationError as exc:
        assert exc.path.startswith("$")
        assert exc.reason


APP = App(MemoryInbox())  # the whole receive path, in process, with a real inbox behind it


def deliver(path: str, body: bytes) -> testing.Response:
    return asyncio.run(testing.deliver(APP, body, path=path))


@FUZZ
@given(valid_notifications())
def test_fuzz_app_valid_notification_is_200(case: tuple[str, bytes]) -> None:
    response = deliver(*case)
    assert (response.status, response.body) == (200, b"ok")


@FUZZ
@given(st.one_of(broken_notifications(), valid_notifications()))
def test_fuzz_app_never_answers_5xx(case: tuple[str, bytes]) -> None:
    response = deliver(*case)
    assert response.status in (200, 400, 413, 415), response.body
    if response.status != 200:
        answer = response.json()
        assert answer["path"].startswith("$") and answer["error"]


@FUZZ
@given(
    st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
    st.text(alphabet="/abcdefv0.1-", max_size=40),
    st.binary(max_size=100),
    st.dictionaries(
        st.sampled_from(["content-type", "content-length", "x-forwarded-for", "transfer-encoding"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/;=+-. ", max_size=30),
        max_size=3,
    ),
)
def test_fuzz_app_any_method_path_and_headers_never_5xx(
    method: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    response = asyncio.run(
        testing.deliver(APP, body, path="/" + path.lstrip("/"), headers=headers, method=method)
    )
    assert response.status < 500, (response.status, response.body)
