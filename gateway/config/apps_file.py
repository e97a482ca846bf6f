"""apps.yaml: the partner apps (Karpoosheh) and their hashed keys.

Apps and agencies are separate kinds of caller: an app's key reads citizens' national
inboxes and sends their replies, an agency's sends messages. So a key hash may not be
both, and the two rings never share an entry.
"""

import os

from gateway.config.agencies_file import KEY_HASH_RE
from gateway.config.schema import App
from gateway.config.shared import read_name
from gateway.config.yamlnodes import NodeReader, line_of

APP_KEYS = ("id", "name", "keys", "rate_per_s")


def read_apps(path, agencies, errors):
    """The apps of one file; their keys checked against each other and the agencies'."""
    reader = NodeReader(path, errors)
    root = reader.compose()
    if root is None:
        return ()
    fields = reader.mapping(root, "apps file", ("apps",), required=("apps",))
    if not fields or "apps" not in fields:
        return ()
    agency_keys = {key: agency.id for agency in agencies or () for key in agency.keys}
    seen_ids, seen_keys, apps = {}, {}, []
    for index, node in enumerate(reader.sequence(fields["apps"][1], "apps") or ()):
        app = _read_app(reader, node, f"apps[{index}]", seen_ids, seen_keys, agency_keys)
        if app is not None:
            apps.append(app)
    return tuple(apps)


def _read_app(reader, node, what, seen_ids, seen_keys, agency_keys):
    before = len(reader.errors)
    fields = reader.mapping(node, what, APP_KEYS, required=("id", "name", "keys"))
    if fields is None:
        return None
    app_id = read_name(reader, fields["id"][1], f"{what}.id") if "id" in fields else None
    if app_id is not None and app_id in seen_ids:
        reader.fail(fields["id"][1], f"{what}.id: app {app_id!r} is listed twice "
                                     f"(first at line {seen_ids[app_id]})")
    elif app_id is not None:
        seen_ids[app_id] = line_of(fields["id"][1])
    name = reader.text(fields["name"][1], f"{what}.name") if "name" in fields else None
    keys = []
    for key, key_node in (reader.texts(fields["keys"][1], f"{what}.keys", non_empty=True)
                          or ()) if "keys" in fields else ():
        if not KEY_HASH_RE.match(key):
            reader.fail(key_node, f"{what}.keys: expected \"sha256:\" and 64 lowercase hex "
                                  "digits (`payam-gateway hash-key` prints one)")
        elif key in agency_keys:
            reader.fail(key_node, f"{what}.keys: this key is agency "
                                  f"{agency_keys[key]!r}'s: an app needs its own key")
        elif key in seen_keys:
            reader.fail(key_node, f"{what}.keys: already used at "
                                  f"{os.path.basename(reader.path)}:{seen_keys[key]}")
        else:
            seen_keys[key] = line_of(key_node)
            keys.append(key)
    rate = App.rate_per_s
    if "rate_per_s" in fields:
        rate = reader.number(fields["rate_per_s"][1], f"{what}.rate_per_s", above=0)
    if len(reader.errors) > before:
        return None
    return App(id=app_id, name=name, keys=tuple(keys), rate_per_s=rate)
