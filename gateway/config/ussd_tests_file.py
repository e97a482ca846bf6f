"""Menu test files (`<ussd_menus>/tests/*.yaml`), read for `check-config --ussd-tests`:

    tests:
      - name: file a complaint
        dial: "*4*0135#"
        from: "989121234567"        # optional
        responses:                  # optional: what dynamic states' endpoints answer
          "http://127.0.0.1:9000/ussd/case-status": {text: "...", end: true}
        steps:
          - expect: "قوه قضاییه"     # the dial's page contains this
          - send: "1"
            expect: "نوع درخواست"
          - send: "0067749828"
            expect: "کد پیگیری"
            end: true               # and the dialog ends with it

Each test is a plain dict (name, dial, msisdn, responses {url: (text, end)}, steps
[{send, expect, end, line}], file, line) for gateway.ussd.menu_tests.
"""

import os

from gateway.config.yamlnodes import NodeReader, line_of

TEST_KEYS = ("name", "dial", "from", "responses", "steps")
STEP_KEYS = ("send", "expect", "end")


def test_files(menus_path):
    directory = os.path.join(menus_path, "tests")
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
            if name.endswith(".yaml") and not name.startswith(".")]


def read_ussd_tests(menus_path, errors):
    tests = []
    for path in test_files(menus_path):
        reader = NodeReader(path, errors)
        root = reader.compose()
        if root is None:
            continue
        fields = reader.mapping(root, "menu tests", ("tests",), required=("tests",))
        for index, node in enumerate(reader.sequence(fields["tests"][1], "tests",
                                                     non_empty=True) or ()
                                     if fields and "tests" in fields else ()):
            test = _read_test(reader, node, f"tests[{index}]")
            if test is not None:
                tests.append(test)
    return tests


def _read_test(reader, node, what):
    before = len(reader.errors)
    fields = reader.mapping(node, what, TEST_KEYS, required=("name", "dial", "steps"))
    if fields is None:
        return None
    test = {"file": reader.path, "line": line_of(node), "msisdn": "989120000000",
            "responses": {}, "steps": []}
    for key in ("name", "dial"):
        if key in fields:
            test[key] = reader.text(fields[key][1], f"{what}.{key}")
    if "from" in fields:
        test["msisdn"] = reader.text(fields["from"][1], f"{what}.from")
    if "responses" in fields:
        answers = reader.mapping(fields["responses"][1], f"{what}.responses",
                                 _any_key()) or {}
        for url, (_key_node, value) in answers.items():
            answer = reader.mapping(value, f"{what}.responses[{url!r}]", ("text", "end"),
                                    required=("text",))
            if answer and "text" in answer:
                end = True
                if "end" in answer:
                    end = reader.boolean(answer["end"][1], f"{what}.responses.end")
                test["responses"][url] = (reader.text(answer["text"][1],
                                                      f"{what}.responses.text"), end)
    if "steps" in fields:
        for index, item in enumerate(reader.sequence(fields["steps"][1], f"{what}.steps",
                                                     non_empty=True) or ()):
            where = f"{what}.steps[{index}]"
            step_fields = reader.mapping(item, where, STEP_KEYS)
            if step_fields is None:
                continue
            step = {"line": line_of(item), "send": None, "expect": None, "end": None}
            for key in ("send", "expect"):
                if key in step_fields:
                    step[key] = reader.text(step_fields[key][1], f"{where}.{key}")
            if "end" in step_fields:
                step["end"] = reader.boolean(step_fields["end"][1], f"{where}.end")
            if index > 0 and step["send"] is None:
                reader.fail(item, f"{where}: every step after the first sends something")
            if index == 0 and step["send"] is not None:
                reader.fail(item, f"{where}: the first step is the dial's page: no send")
            test["steps"].append(step)
    return test if len(reader.errors) == before else None


class _any_key(tuple):
    """Every key is allowed (URLs)."""

    def __contains__(self, key):
        return True

    def __iter__(self):
        return iter(("<url>",))
