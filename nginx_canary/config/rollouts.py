"""Reading the ``rollouts`` section: each rollout's upstream, canary servers, steps and analysis."""

from __future__ import annotations

from fractions import Fraction
from types import MappingProxyType
from typing import Dict, List, Mapping, Tuple

import yaml

from nginx_canary.config.endpoints import EndpointReader
from nginx_canary.config.model import AnalysisSettings, OnSuccess, RolloutSettings
from nginx_canary.config.nodes import describe, is_null, join_key, line_of
from nginx_canary.config.reader import NodeReader, nullable
from nginx_canary.config.schema import ANALYSIS_KEYS, ROLLOUT_KEYS
from nginx_canary.config.syntax import DECIMAL
from nginx_canary.domain import StepError, check_steps, validate_name
from nginx_canary.errors import BadInputError
from nginx_canary.inputs import parse_percent
from nginx_canary.nginx.model import UPSTREAM_CONTEXTS

ON_SUCCESS_CHOICES: Tuple[str, ...] = ("keep", "restore")


class RolloutReader(NodeReader):
    """Reads ``rollouts`` and what each rollout holds; errors carry file, line and key."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.endpoints = EndpointReader(source)

    def rollouts(self, node: yaml.Node, key: str) -> Mapping[str, RolloutSettings]:
        if is_null(node):
            return MappingProxyType({})
        entries = self.entries(node, key, "a mapping of rollout name to its settings")
        rollouts: Dict[str, RolloutSettings] = {}
        # Two rollouts steering one upstream would overwrite each other's weights.
        claimed: Dict[str, str] = {}
        for name, (key_node, value_node) in entries.items():
            try:
                validate_name(name)
            except BadInputError as exc:
                raise self.error(key_node, key, exc.message) from None
            rollouts[name] = self.rollout(value_node, join_key(key, name), name, line_of(key_node), claimed)
        return MappingProxyType(rollouts)

    def rollout(self, node: yaml.Node, key: str, name: str, name_line: int, claimed: Dict[str, str]) -> RolloutSettings:
        entries = self.section(node, key, ROLLOUT_KEYS, "a mapping of rollout settings")
        for required in ("upstream", "canary"):
            if required not in entries:
                raise self.error(name_line, key, f"missing required key {required!r}")
        upstream_node = entries["upstream"][1]
        upstream = self.word(upstream_node, join_key(key, "upstream"), "upstream name", "backend")
        if upstream in claimed:
            raise self.error(upstream_node, join_key(key, "upstream"),
                             f"upstream {upstream!r} is already steered by {claimed[upstream]}; one upstream, one rollout")
        claimed[upstream] = f"rollout {name!r} (line {line_of(upstream_node)})"
        return self.fields(entries, key, RolloutSettings(name=name, upstream=upstream, canary=()), {
            "context": nullable(lambda n, k: self.choice(n, k, UPSTREAM_CONTEXTS)),
            "canary": self.canary,
            "access_log": nullable(self.path),
            "log_format": nullable(lambda n, k: self.word(n, k, "log format name", "canary")),
            "steps": self.steps,
            "step_interval": self.duration,
            "on_success": self.on_success,
            "analysis": self.analysis,
            "webhooks": self.endpoints.webhooks,
            "gates": self.endpoints.gates,
            "sticky": self.boolean,
        })

    def canary(self, node: yaml.Node, key: str) -> Tuple[str, ...]:
        seen: Dict[str, str] = {}
        for item_key, item in self.items(node, key, "a list of server addresses like ['10.0.0.12:8080']"):
            address = self.word(item, item_key, "server address", "10.0.0.12:8080")
            if address in seen:
                raise self.error(item, item_key, f"duplicate server address {address!r} (also {seen[address]})")
            seen[address] = item_key
        return tuple(seen)

    def steps(self, node: yaml.Node, key: str) -> Tuple[Fraction, ...]:
        what = "a percent from 0 to 100 with at most two decimals, like 12.5"
        steps: List[Fraction] = []
        items = list(self.items(node, key, "a list of percents like [10, 25, 50, 100]"))
        for item_key, item in items:
            # YAML types first (no quoted or boolean steps), then the CLI's PERCENT rules.
            self.number(item, item_key, what, DECIMAL)
            try:
                steps.append(parse_percent(item.value))
            except BadInputError:
                raise self.error(item, item_key, f"expected {what}, got {describe(item)}") from None
        try:
            return check_steps(steps, spelled=[item.value for _, item in items])
        except StepError as exc:
            item_key, item = items[exc.index]
            raise self.error(item, item_key, exc.message) from None

    def on_success(self, node: yaml.Node, key: str) -> OnSuccess:
        return self.choice(node, key, ON_SUCCESS_CHOICES)  # type: ignore[return-value]

    def analysis(self, node: yaml.Node, key: str) -> AnalysisSettings:
        entries = self.section(node, key, ANALYSIS_KEYS, "a mapping of analysis settings")
        return self.fields(entries, key, AnalysisSettings(), {
            "interval": self.duration,
            "window": self.duration,
            "min_requests": self.count,
            "max_error_rate": self.share,
            "error_rate_tolerance": self.tolerance,
            "max_error_rate_increase": self.share,
            "max_p99_latency": self.duration,
            "max_p99_latency_ratio": self.ratio,
            "max_p50_latency_ratio": self.ratio,
            "risk": self.risk,
            "promotion_risk": self.risk,
            "max_step_wait": nullable(self.duration),
            "failure_threshold": self.count,
            "http_checks": self.endpoints.http_checks,
        })

    def risk(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key, "a chance from 0 to 0.5 like 0.01 (1 %)", DECIMAL)
        if not 0 < value < 0.5:
            raise self.error(node, key, f"must be above 0 and below 0.5 (0.01 = 1 %), got {node.value}")
        return float(value)

    def tolerance(self, node: yaml.Node, key: str) -> float:
        value = self.number(node, key, "a share like 0.25 (the canary's rate may be 25 % above stable's)", DECIMAL)
        if value < 0:
            raise self.error(node, key, f"must be 0 or more (0.25 = 25 % above stable's rate), got {node.value}")
        return float(value)
