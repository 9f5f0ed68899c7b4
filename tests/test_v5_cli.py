"""The simulator and examples for v5 pushes, and ``send --as-platform``, against real servers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner

from iotpush.cli import main
from iotpush.v5 import PAIRS
from tests.conftest import Recorder, running
from tests.test_platform import Flaky


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_cli_examples_print_every_v5_pair_after_the_legacy_types() -> None:
    out = invoke("examples", "--compact")
    lines = out.splitlines()
    assert len(lines) == 22 + len(PAIRS)
    pairs = [f"{b['resource']}:{b['event']}" for b in map(json.loads, lines[22:])]
    assert pairs == list(PAIRS)
    one = json.loads(invoke("examples", "device.property:report"))
    assert one["notify_data"]["body"]["services"]
    assert "# device.status:update  (POST /v5/forwarding)" in invoke("examples")


def test_cli_send_a_pair_and_the_v5_mix_are_delivered(serve: Callable[..., Any]) -> None:
    recorder = Recorder()
    with serve(recorder) as (url, _):
        out = invoke("send", "device.property:report", "--url", url + "/v5/forwarding")
        assert "200 OK 1" in out
        count = 2 * len(PAIRS)
        out = invoke("send", "mix-v5", "--count", str(count), "--device", "dev-1",
                     "--url", url + "/v5/forwarding")  # fmt: skip
        assert f"200 OK {count}" in out
        seen = recorder.wait_for(count + 1)
    assert [n.notify_type for n in seen[1:]] == list(PAIRS) * 2
    devices = {n.device for n in seen[1:] if not n.notify_type.startswith(("batch", "product"))}
    assert devices == {"dev-1"}


def test_cli_send_as_platform_reports_delivered_discarded_held_back() -> None:
    with running(Flaky(failures=3)) as url:
        out = invoke("send", "device.status:update", "--count", "8", "--as-platform", "v5",
                     "--url", url + "/v5/forwarding", code=1)  # fmt: skip
    assert "as the v5 platform: 8 pushes, delivered 5, discarded 3, held back 0" in out
    with running(Flaky(failures=3)) as url:
        out = invoke("send", "device.status:update", "--count", "8", "--as-platform", "legacy",
                     "--url", url + "/v5/forwarding")  # fmt: skip
    assert "as the legacy platform: 8 pushes, delivered 8, discarded 0, held back 0" in out
