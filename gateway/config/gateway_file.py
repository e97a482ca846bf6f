"""gateway.yaml: its sections (http, metrics, store, paths of the other files, retention)
read into the settings `load_gateway_config` builds the GatewayConfig from; the operators
section is read by `operators.py`."""

import ipaddress
import os
import re

from gateway.config.directory_file import read_directory_settings
from gateway.config.operators import read_operators
from gateway.config.smtp_file import read_smtp_settings
from gateway.config.schema import (
    DEFAULT_ADMIN_LISTEN, DEFAULT_HTTP_MAX_CONNECTIONS, LOG_FORMATS, Authenticity, Retention)

DEFAULT_HTTP_LISTEN = ("127.0.0.1", 8080)
DEFAULT_STORE_PATH = "var/gateway.db"
PORT_RE = re.compile(r"^[0-9]{1,5}$")

GATEWAY_KEYS = ("http", "metrics", "store", "agencies", "routing_rules", "ussd_menus",
                "operators", "retention", "authenticity", "admin", "log", "apps",
                "directory", "smtp")
ADMIN_KEYS = ("listen", "remote")
RETENTION_KEYS = ("messages", "audit", "receipts", "inbound", "inbox", "ussd")
AUTHENTICITY_KEYS = ("retention_days", "checks_per_hour")
RETENTION_MAX_DAYS = 36500


def read_gateway(reader, root):
    """The settings of gateway.yaml, paths resolved; None if the file is not a mapping."""
    fields = reader.mapping(root, "gateway config", GATEWAY_KEYS,
                            required=("agencies", "routing_rules", "operators"))
    if fields is None:
        return None
    base = os.path.dirname(reader.path)
    settings = {
        "http_listen": DEFAULT_HTTP_LISTEN, "metrics_listen": None,
        "store_path": os.path.normpath(os.path.join(base, DEFAULT_STORE_PATH)),
        "agencies_path": None, "routing_rules_path": None, "ussd_menus_path": None,
        "operators": None, "named": set(), "retention": Retention(),
        "http_max_connections": DEFAULT_HTTP_MAX_CONNECTIONS, "log": {},
        "authenticity": Authenticity(),
        "admin_listen": DEFAULT_ADMIN_LISTEN,
        "apps_path": None, "directory": None, "smtp": None,
    }
    if "http" in fields:
        _read_http_section(reader, fields["http"][1], settings)
    if "metrics" in fields:
        settings["metrics_listen"] = _read_listen_section(reader, fields["metrics"][1],
                                                          "metrics")
    if "store" in fields:
        store = reader.mapping(fields["store"][1], "store", ("path",), required=("path",))
        if store and "path" in store:
            settings["store_path"] = _read_store_path(reader, store["path"][1], base)
    if "agencies" in fields:
        settings["agencies_path"] = _read_existing_path(
            reader, fields["agencies"][1], base, "agencies", directory=None)
    if "routing_rules" in fields:
        settings["routing_rules_path"] = _read_existing_path(
            reader, fields["routing_rules"][1], base, "routing_rules", directory=None)
    if "ussd_menus" in fields:
        settings["ussd_menus_path"] = _read_existing_path(
            reader, fields["ussd_menus"][1], base, "ussd_menus", directory=True)
    if "operators" in fields:
        settings["operators"], settings["named"] = read_operators(
            reader, fields["operators"][1])
    if "retention" in fields:
        settings["retention"] = _read_retention(reader, fields["retention"][1])
    if "authenticity" in fields:
        settings["authenticity"] = _read_authenticity(reader, fields["authenticity"][1])
    if "admin" in fields:
        settings["admin_listen"] = _read_admin(reader, fields["admin"][1])
    if "log" in fields:
        settings["log"] = _read_log(reader, fields["log"][1])
    if "apps" in fields:
        settings["apps_path"] = _read_existing_path(
            reader, fields["apps"][1], base, "apps", directory=False)
    if "directory" in fields:
        settings["directory"] = read_directory_settings(reader, fields["directory"][1], base)
    if "smtp" in fields:
        settings["smtp"] = read_smtp_settings(reader, fields["smtp"][1])
    return settings


def _read_log(reader, node):
    """log: {format, debug_text_agencies}; the agency ids are checked against the
    agencies file by load_gateway_config."""
    fields = reader.mapping(node, "log", ("format", "debug_text_agencies"))
    settings = {}
    if fields and "format" in fields:
        value_node = fields["format"][1]
        fmt = reader.text(value_node, "log.format")
        if fmt is not None and fmt not in LOG_FORMATS:
            reader.fail(value_node, f"log.format: one of {', '.join(LOG_FORMATS)}, "
                                    f"not {fmt!r}")
        elif fmt is not None:
            settings["format"] = fmt
    if fields and "debug_text_agencies" in fields:
        names = reader.texts(fields["debug_text_agencies"][1], "log.debug_text_agencies")
        if names is not None:
            settings["debug_text_agencies"] = names      # [(agency id, node)]
    return settings


def _read_authenticity(reader, node):
    """The 4040 check's settings; those left out keep their defaults."""
    fields = reader.mapping(node, "authenticity", AUTHENTICITY_KEYS) or {}
    values = {}
    if "retention_days" in fields:
        values["retention_days"] = reader.number(
            fields["retention_days"][1], "authenticity.retention_days", above=0,
            maximum=RETENTION_MAX_DAYS)
    if "checks_per_hour" in fields:
        values["checks_per_hour"] = reader.integer(
            fields["checks_per_hour"][1], "authenticity.checks_per_hour", 1, 3600)
    return Authenticity(**{key: value for key, value in values.items() if value is not None})


def _read_admin(reader, node):
    """The admin endpoint's address (status, reload): it has no authentication, so an
    address other than loopback must be meant (`remote: true`)."""
    fields = reader.mapping(node, "admin", ADMIN_KEYS, required=("listen",))
    if not fields or "listen" not in fields:
        return None
    listen = _read_listen(reader, fields["listen"][1], "admin.listen")
    remote = reader.boolean(fields["remote"][1], "admin.remote") if "remote" in fields \
        else False
    if listen is not None and not remote and not _is_loopback(listen[0]):
        reader.fail(fields["listen"][1],
                    f"admin.listen: {listen[0]} is not a loopback address, and the admin "
                    "endpoint has no authentication (it reloads the daemon): keep it on "
                    "127.0.0.1, or add `remote: true` to mean it")
        return None
    return listen


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_retention(reader, node):
    """Days per kind of record; kinds left out keep their defaults."""
    fields = reader.mapping(node, "retention", RETENTION_KEYS)
    days = {}
    for key, (_key_node, value) in (fields or {}).items():
        value = reader.number(value, f"retention.{key}", above=0,
                              maximum=RETENTION_MAX_DAYS)
        if value is not None:
            days[key] = value
    return Retention(**days)


def _read_listen_section(reader, node, section):
    fields = reader.mapping(node, section, ("listen",), required=("listen",))
    if not fields or "listen" not in fields:
        return None
    return _read_listen(reader, fields["listen"][1], f"{section}.listen")


def _read_http_section(reader, node, settings):
    fields = reader.mapping(node, "http", ("listen", "max_connections", "workers"),
                            required=("listen",))
    settings["http_listen"] = None
    if not fields:
        return
    if "listen" in fields:
        settings["http_listen"] = _read_listen(reader, fields["listen"][1], "http.listen")
    if "max_connections" in fields:
        settings["http_max_connections"] = reader.integer(
            fields["max_connections"][1], "http.max_connections", 1, 1_000_000)
    if "workers" in fields:
        settings["http_workers"] = _read_workers(reader, fields["workers"][1])


def _read_workers(reader, node):
    """http.workers: "auto" or 0..64 (0: everything in one process)."""
    if getattr(node, "value", None) == "auto":
        return "auto"
    return reader.integer(node, "http.workers", 0, 64)


def _read_listen(reader, node, what):
    """"host:port" or "[v6addr]:port" → (host, port)."""
    text = reader.text(node, what)
    if text is None:
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        valid = bool(sep) and ":" in host
    else:
        host, sep, port = text.rpartition(":")
        valid = bool(sep) and ":" not in host
    if not valid or not host or not PORT_RE.match(port):
        reader.fail(node, f"{what}: expected \"host:port\" (IPv6 as \"[::1]:8080\"), "
                          f"got {text!r}")
        return None
    if not 1 <= int(port) <= 65535:
        reader.fail(node, f"{what}: port must be between 1 and 65535, got {port}")
        return None
    return host, int(port)


def _read_store_path(reader, node, base):
    text = reader.text(node, "store.path")
    if text is None:
        return None
    path = os.path.normpath(os.path.join(base, text))
    if os.path.isdir(path):
        reader.fail(node, f"store.path: {path} is a directory; name the database file")
        return None
    return path


def _read_existing_path(reader, node, base, what, directory):
    """A path that must exist; directory=True demands a directory, None allows either."""
    text = reader.text(node, what)
    if text is None:
        return None
    path = os.path.normpath(os.path.join(base, text))
    if not os.path.exists(path):
        reader.fail(node, f"{what}: {path} does not exist")
        return None
    if (directory or text.endswith("/")) and not os.path.isdir(path):
        reader.fail(node, f"{what}: {path} is not a directory")
        return None
    return path

