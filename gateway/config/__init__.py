"""Configuration: YAML files checked line by line into frozen dataclasses."""

from gateway.config.load import check_config, load_agencies, load_gateway_config, load_routing
from gateway.config.schema import (
    Agency, GatewayConfig, OperatorConfig, Routing, RoutingRule, Webhook)
from gateway.config.yamlnodes import ConfigError, ConfigErrors

__all__ = [
    "Agency", "ConfigError", "ConfigErrors", "GatewayConfig", "OperatorConfig", "Routing",
    "RoutingRule", "Webhook", "check_config", "load_agencies", "load_gateway_config",
    "load_routing",
]
