"""Line-aware YAML reading: composed nodes checked into plain values, errors as `file:line`.

PyYAML's `load` throws line numbers away; `compose` keeps a `start_mark` on every node,
so we validate the node tree directly and build values as we go. Every problem is
recorded (not raised) so one run of `check-config` shows all of them.
"""

import difflib

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"

# Only the scalar constructors are used, and they keep no state between calls.
_scalars = SafeConstructor()


class ConfigError(Exception):
    """One problem in one configuration file; `line` is 1-based, None for a whole file."""

    def __init__(self, file, line, message):
        super().__init__(file, line, message)
        self.file, self.line, self.message = file, line, message

    def __str__(self):
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class ConfigErrors(Exception):
    """Every problem found by one load; `str()` gives one `file:line: message` per line."""

    def __init__(self, errors):
        super().__init__(errors)
        self.errors = list(errors)

    def __str__(self):
        return "\n".join(str(error) for error in self.errors)


def line_of(node):
    return node.start_mark.line + 1


def kind_of(node):
    """How a node reads to a person, for 'expected X, got Y' messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _TAG_NULL:
        return "nothing (null)"
    return {_TAG_BOOL: "a boolean", _TAG_INT: "an integer",
            _TAG_FLOAT: "a number"}.get(node.tag, "a string") + f" ({node.value!r})"


class NodeReader:
    """Checks the nodes of one file; records problems into a shared error list.

    Each reading method returns the value, or None after recording why it could not.
    `what` names the setting in messages, e.g. "operators[0].window".
    """

    def __init__(self, path, errors):
        self.path = path
        self.errors = errors

    def fail(self, node_or_line, message):
        line = node_or_line if isinstance(node_or_line, int) or node_or_line is None \
            else line_of(node_or_line)
        self.errors.append(ConfigError(self.path, line, message))

    def compose(self):
        """The file's root node, or None (problem recorded) when unreadable or not YAML."""
        try:
            with open(self.path, "rb") as stream:
                root = yaml.compose(stream, Loader=yaml.SafeLoader)
        except OSError as error:
            self.fail(None, f"cannot read file: {error.strerror or error}")
            return None
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            problem = error.problem or error.context or "invalid YAML"
            if error.context and error.problem:
                problem = f"{error.context}: {error.problem}"
            self.fail(mark.line + 1 if mark else None, f"YAML syntax error: {problem}")
            return None
        except yaml.YAMLError as error:     # e.g. ReaderError: bytes that are not text
            self.fail(None, f"not a readable YAML file: {error}")
            return None
        if root is None:
            self.fail(1, "file is empty")
        return root

    def mapping(self, node, what, allowed, required=()):
        """Keys to (key node, value node), checking unknown, duplicate and missing keys."""
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what}: expected a mapping, got {kind_of(node)}")
            return None
        found = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _TAG_NULL:
                self.fail(key_node, f"{what}: keys must be names, got {kind_of(key_node)}")
                continue
            key = key_node.value
            if key == "<<":
                self.fail(key_node, f"{what}: YAML merge keys (<<) are not supported")
                continue
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                self.fail(key_node, f"{what}: unknown key {key!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; allowed: {', '.join(allowed)}")
                continue
            if key in found:
                self.fail(key_node, f"{what}: duplicate key {key!r} "
                          f"(first at line {line_of(found[key][0])})")
                continue
            found[key] = (key_node, value_node)
        for key in required:
            if key not in found:
                self.fail(node, f"{what}: missing required key {key!r}")
        return found

    def sequence(self, node, what, *, non_empty=False):
        if not isinstance(node, SequenceNode):
            self.fail(node, f"{what}: expected a list, got {kind_of(node)}")
            return None
        if non_empty and not node.value:
            self.fail(node, f"{what}: must not be empty")
            return None
        return node.value

    def text(self, node, what, *, allow_empty=False):
        """A scalar's text exactly as written, so `0123` or `8080:80` are not reinterpreted."""
        if not isinstance(node, ScalarNode):
            self.fail(node, f"{what}: expected a string, got {kind_of(node)}")
            return None
        if node.tag == _TAG_NULL and node.style is None:
            if allow_empty:
                return ""
            self.fail(node, f"{what}: must not be empty")
            return None
        if not node.value and not allow_empty:
            self.fail(node, f"{what}: must not be empty")
            return None
        return node.value

    def integer(self, node, what, minimum=None, maximum=None):
        if not isinstance(node, ScalarNode) or node.tag != _TAG_INT:
            self.fail(node, f"{what}: expected an integer, got {kind_of(node)}")
            return None
        value = self._construct(node, _scalars.construct_yaml_int, what)
        if value is not None and not self._in_range(node, what, value, minimum, maximum):
            return None
        return value

    def number(self, node, what, *, above=None, minimum=None, maximum=None):
        """An int or float; `above` is an exclusive lower bound."""
        if not isinstance(node, ScalarNode) or node.tag not in (_TAG_INT, _TAG_FLOAT):
            self.fail(node, f"{what}: expected a number, got {kind_of(node)}")
            return None
        construct = _scalars.construct_yaml_int if node.tag == _TAG_INT \
            else _scalars.construct_yaml_float
        value = self._construct(node, construct, what)
        if value is None:
            return None
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(node, f"{what}: must be a finite number, got {node.value!r}")
            return None
        if above is not None and value <= above:
            self.fail(node, f"{what}: must be greater than {above:g}, got {node.value}")
            return None
        if not self._in_range(node, what, value, minimum, maximum):
            return None
        return value

    def boolean(self, node, what):
        if not isinstance(node, ScalarNode) or node.tag != _TAG_BOOL:
            self.fail(node, f"{what}: expected true or false, got {kind_of(node)}")
            return None
        return self._construct(node, _scalars.construct_yaml_bool, what)

    def texts(self, node, what, *, non_empty=False):
        """A list of strings, each paired with its node (for per-item line numbers)."""
        items = self.sequence(node, what, non_empty=non_empty)
        if items is None:
            return None
        result = []
        for index, item in enumerate(items):
            value = self.text(item, f"{what}[{index}]")
            if value is not None:
                result.append((value, item))
        return result if len(result) == len(items) else None

    def _construct(self, node, construct, what):
        try:
            return construct(node)
        except (ConstructorError, ValueError):
            self.fail(node, f"{what}: cannot read {node.value!r}")
            return None

    def _in_range(self, node, what, value, minimum, maximum):
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            if minimum is not None and maximum is not None:
                bounds = f"between {minimum:g} and {maximum:g}"
            elif minimum is not None:
                bounds = f"at least {minimum:g}"
            else:
                bounds = f"at most {maximum:g}"
            self.fail(node, f"{what}: must be {bounds}, got {node.value}")
            return False
        return True
