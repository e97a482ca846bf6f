"""Loading and checking gateway.yaml, the agencies files and the routing rule files.

Every function collects all problems of a load and raises them together as ConfigErrors,
each `file:line: message`, so an operator fixes a file in one pass. One module reads
each kind of file (`gateway_file.py` with `operators.py`, `agencies_file.py`,
`routing_file.py`); this one puts them together.
"""

import dataclasses
import os

from gateway.config.agencies_file import read_agencies
from gateway.config.apps_file import read_apps
from gateway.config.directory_file import read_directory_file
from gateway.config.gateway_file import read_gateway
from gateway.config.routing_file import read_routing
from gateway.config.schema import GatewayConfig, LogSettings
from gateway.config.ussd_file import read_ussd_menus
from gateway.config.yamlnodes import ConfigErrors, NodeReader


def load_gateway_config(path):
    """Everything `run` needs: gateway.yaml plus the agencies and routing files it names."""
    path = os.path.abspath(path)
    errors = []
    reader = NodeReader(path, errors)
    root = reader.compose()
    settings = read_gateway(reader, root) if root is not None else None
    if settings is None:
        raise _in_reading_order(errors)
    operator_names = {op.name for op in settings["operators"] or ()} | settings["named"]
    agencies = routing = None
    if settings["agencies_path"]:
        agencies = read_agencies(settings["agencies_path"], errors)
    if settings["routing_rules_path"]:
        routing = read_routing(settings["routing_rules_path"], operator_names, errors)
    menus = ()
    if settings["ussd_menus_path"] and agencies is not None:
        menus = read_ussd_menus(settings["ussd_menus_path"], agencies, errors)
    log = _log_settings(reader, settings["log"], agencies)
    apps = read_apps(settings["apps_path"], agencies, errors) if settings["apps_path"] else ()
    directory = settings["directory"]
    if directory is not None and directory.path:
        directory = dataclasses.replace(
            directory, citizens=read_directory_file(directory.path, errors))
    if errors:
        raise _in_reading_order(errors)
    return GatewayConfig(
        path=path,
        http_listen=settings["http_listen"],
        metrics_listen=settings["metrics_listen"],
        store_path=settings["store_path"],
        agencies_path=settings["agencies_path"],
        routing_rules_path=settings["routing_rules_path"],
        ussd_menus_path=settings["ussd_menus_path"],
        operators=settings["operators"],
        agencies=agencies,
        routing=routing,
        retention=settings["retention"],
        http_max_connections=settings["http_max_connections"],
        http_workers=settings.get("http_workers", "auto"),
        authenticity=settings["authenticity"],
        admin_listen=settings["admin_listen"],
        ussd_menus=menus,
        log=log,
        apps_path=settings["apps_path"],
        apps=apps,
        directory=directory,
        smtp=settings["smtp"])


def _log_settings(reader, fields, agencies):
    """LogSettings from gateway.yaml's `log:`; an agency it names must exist."""
    known = {agency.id for agency in agencies or ()}
    names = []
    for name, node in fields.get("debug_text_agencies", ()):
        if agencies is not None and name not in known:
            reader.fail(node, f"log.debug_text_agencies: no agency {name!r} in the "
                              f"agencies file")
        names.append(name)
    return LogSettings(format=fields.get("format", "auto"),
                       debug_text_agencies=tuple(names))


def _read_alone(read, path, *args):
    """One file (or directory) read by `read(path, *args, errors)`, for a reload: its
    value, or ConfigErrors with every problem it had."""
    errors = []
    value = read(os.path.abspath(path), *args, errors)
    if errors:
        raise _in_reading_order(errors)
    return value


def load_agencies(path):
    """The agencies of a file or a directory of *.yaml files (merged in name order)."""
    return _read_alone(read_agencies, path)


def load_routing(path, operator_names):
    """The routing rules of a directory of *.yaml files (name order) or of one file."""
    return _read_alone(read_routing, path, set(operator_names))


def load_apps(path, agencies):
    """The partner apps of apps.yaml (SIGHUP: read anew against the agencies)."""
    return _read_alone(read_apps, path, agencies)


def load_directory_file(path):
    """The citizens of a directory file (SIGHUP: read anew)."""
    return _read_alone(read_directory_file, path)


def load_ussd_menus(path, agencies):
    """The USSD menus of a directory (SIGHUP: read anew against the agencies)."""
    return _read_alone(read_ussd_menus, path, agencies)


def _in_reading_order(errors):
    """Errors grouped by file (in the order files were read), then by line."""
    file_rank = {}
    for error in errors:
        file_rank.setdefault(error.file, len(file_rank))
    return ConfigErrors(sorted(errors, key=lambda e: (file_rank[e.file], e.line or 0)))


def check_config(path):
    """Formatted `file:line: message` lines, empty when `run` would load the config."""
    try:
        load_gateway_config(path)
    except ConfigErrors as problems:
        return [str(error) for error in problems.errors]
    return []
