"""What more than one config file reads: names, and the files a path stands for."""

import os
import re
from urllib.parse import urlsplit

from gateway.config.yamlnodes import ConfigError

NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")


def read_name(reader, node, what):
    text = reader.text(node, what)
    if text is not None and not NAME_RE.match(text):
        reader.fail(node, f"{what}: {text!r} must be 1-32 of a-z, 0-9, '_' and '-'")
        return None
    return text


def yaml_files(path, errors):
    """The file itself, or a directory's *.yaml files in name order (dotfiles skipped)."""
    if os.path.isdir(path):
        names = sorted(name for name in os.listdir(path)
                       if name.endswith(".yaml") and not name.startswith("."))
        if not names:
            errors.append(ConfigError(path, None, "directory holds no *.yaml files"))
        return [os.path.join(path, name) for name in names]
    if not os.path.exists(path):
        errors.append(ConfigError(path, None, "does not exist"))
        return []
    return [path]


def split_http_url(url):
    """urlsplit(url) for an http(s) URL with a host and, if it names one, a port that
    is a port; None for anything else. Never raises: urllib does (ValueError) for an
    unclosed `[`, a stray `]` or a port such as `99999` or `ab`."""
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts
