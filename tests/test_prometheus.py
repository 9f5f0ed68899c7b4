"""The shipped alert rules and dashboard, checked by Prometheus's own tools and a real Prometheus.

Needs Debian's ``prometheus`` package (``prometheus`` and ``promtool``; `.ci/run` installs it):
without it the tests skip and say so, unless ``IOTPUSH_REQUIRE_SERVICES=1`` (CI), where they fail.
The real Prometheus runs on a free loopback port with a data directory of its own, scraping a
test server every second; the system service is never used.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from iotpush import Config, create_app, testing

from ._servers import ROOT, free_port
from .conftest import running, service_missing, wait_until

RULES = ROOT / "deploy" / "prometheus" / "iotpush-rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "iotpush-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "iotpush.json"
METRIC_NAME = re.compile(r"\b(?:iotpush|process|python)_[a-z0-9_]+\b")
JSON = {"content-type": "application/json"}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        service_missing(f"{name} not installed: apt-get install prometheus (Debian's package)")
    return found


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", ())]


def served_names(exposition: str) -> set[str]:
    """Every sample name ``exposition`` serves, or would once a labelled child exists: a counter
    serves ``X_total``, a histogram ``X`` serves ``X_bucket``, ``X_sum`` and ``X_count``."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "counter":
                names.add(name.removesuffix("_total") + "_total")
            elif kind == "histogram":
                names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_rules_unit_tests_cover_every_rule_and_pass() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == set(rule_expressions())  # each rule fires in a test (and is quiet in one)
    result = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_and_rules_use_only_metric_names_metrics_serves() -> None:
    with running(create_app(Config(store="memory://", sinks=("nats://127.0.0.1:9",)))) as url:
        served = served_names(httpx.get(f"{url}/metrics").text)
    expressions = [*rule_expressions().values(), *dashboard_expressions()]
    assert len(expressions) > 20
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert used, expressions
    assert used - served == set()
    for expr in expressions:  # each reads at least one of ours
        assert METRIC_NAME.search(expr), expr


# a real Prometheus ---------------------------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]

    def value(self, expr: str) -> float | None:
        """The single value of a scalar-valued instant query, None while there is none."""
        result = self.query(expr)["result"]
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, str]]:
    """A Prometheus on a free loopback port scraping a test server every second, with the
    shipped rules loaded; yields it and the server's URL."""
    binary = tool("prometheus")
    app = create_app(Config(store=f"sqlite:///{tmp_path / 'p.db'}"))
    with running(app) as target:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "iotpush",
                    "static_configs": [{"targets": [target.removeprefix("http://")]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Prometheus(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail((tmp_path / "prometheus.log").read_text()[-2000:])
            try:
                return httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(ready, 60, "Prometheus to start")
            yield server, target
        finally:
            process.terminate()
            process.wait(30)
            log.close()


def settle(server: Prometheus, expected: dict[str, float], timeout: float = 60) -> dict[str, Any]:
    """Wait until Prometheus's last scrape gives ``expected`` (expression -> value); the values
    it has meanwhile, for the failure message."""
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {expr: server.value(expr) for expr in expected}
        if seen == expected:
            return seen
        time.sleep(0.5)
    return seen


def test_prometheus_scrapes_what_was_sent(prometheus: tuple[Prometheus, str]) -> None:
    server, url = prometheus
    wait_until(lambda: server.value('up{job="iotpush"}') == 1, 60, "the first scrape")
    sent = [testing.build("deviceDataChanged", device_id=f"m-{i}") for i in range(5)]
    with httpx.Client(base_url=url, timeout=10) as client:
        for n in [*sent, sent[0]]:  # the first one again: a duplicate
            answer = client.post(testing.path_for(n), content=testing.encode(n), headers=JSON)
            assert answer.status_code == 200
        for _ in range(2):
            answer = client.post("/v1.0.0/messageReceiver", content=b"{not", headers=JSON)
            assert answer.status_code == 400
    received = 'iotpush_notifications_received_total{job="iotpush", type="deviceDataChanged"'
    expected = {
        received + ', outcome="accepted"}': 5.0,
        received + ', outcome="duplicate"}': 1.0,
        'sum(iotpush_requests_refused_total{job="iotpush"})': 2.0,
        'sum(iotpush_inbox_entries{job="iotpush"})': 5.0,
        'iotpush_quarantine_entries{job="iotpush"}': 2.0,
        'iotpush_consecutive_failures{job="iotpush"}': 0.0,
        'iotpush_ack_seconds_count{job="iotpush"}': 8.0,  # every answer of a receive path
    }
    assert settle(server, expected) == expected
    for expr in dashboard_expressions():  # every panel's query is valid PromQL and runs
        server.query(
            expr.replace("$__rate_interval", "1m").replace("$job", "iotpush")
            .replace("$instance", ".*")
        )  # fmt: skip

    def rules_evaluated() -> bool:
        answer = httpx.get(f"{server.url}/api/v1/rules", timeout=10).json()
        health = [r["health"] for g in answer["data"]["groups"] for r in g["rules"]]
        return health == ["ok"] * 6

    wait_until(rules_evaluated, 60, "Prometheus to evaluate the six rules")
