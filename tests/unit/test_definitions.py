"""Definitions: every refusal names the bad field's path and says why.

Each story: given a definition (dict, JSON or TOML text) or start parameters, when it is
loaded or resolved, then it is accepted as written or refused with an exact path and reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stepflow.engine.definitions import (
    DefinitionError,
    ParameterSpec,
    build_definition,
    coerce_parameter,
    load_definition,
    parse_definition,
    resolve_parameters,
    topological_order,
)


def wf(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"identifier": "transcode", "steps": list(steps), **top}


def s(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "job_type": f"job_{step_id}", **fields}


def refused(data: dict[str, Any]) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        build_definition(data)
    return caught.value


# --- accepted definitions -----------------------------------------------------------------


def test_a_valid_definition_keeps_what_was_written() -> None:
    definition = build_definition(
        wf(
            s("probe", parameters={"src": "{workflow.source}"}, outputs=["duration"]),
            s("encode", parents=["probe"], fan_out="{workflow.renditions}",
              parameters={"height": "{item}", "length": "{steps.probe.outputs.duration}"},
              retry={"max_attempts": 3, "non_retryable": ["bad_input"]}, timeout_s=60),
            version="2.1.0-rc.1+build.7",
            parameters=[{"id": "source"}, {"id": "renditions", "type": "array_of_integers", "default": [720]}],
            rights={"retry": ["ops"]},
        )
    )
    encode = definition.step("encode")
    assert definition.version == "2.1.0-rc.1+build.7"
    assert encode.parents == ("probe",)
    assert encode.retry.max_attempts == 3 and encode.retry.non_retryable == ("bad_input",)
    assert encode.timeout_s == 60.0
    assert definition.rights == {"retry": ("ops",)}
    assert topological_order(definition) == ["probe", "encode"]


def test_topological_order_puts_parents_first_and_keeps_definition_order_for_ties() -> None:
    definition = build_definition(
        wf(s("d", parents=["b", "c"]), s("c", parents=["a"]), s("b", parents=["a"]), s("a"))
    )
    assert topological_order(definition) == ["a", "c", "b", "d"]


def test_the_error_text_carries_reason_and_path() -> None:
    error = refused(wf(s("a", parents=["nope"])))
    assert isinstance(error, ValueError)
    assert str(error) == "unknown step 'nope' - at `$.steps[0].parents[0]`"


# --- graph errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (wf(s("a"), s("b", parents=["a", "ghost"])), "$.steps[1].parents[1]", "unknown step 'ghost'"),
        (wf(s("a", parents=["a"])), "$.steps[0].parents[0]", "a step cannot be its own parent"),
        (wf(s("a", parents=["b"]), s("b", parents=["a"])), "$.steps[0].parents", "cycle between steps 'a', 'b'"),
        (
            wf(s("root"), s("x", parents=["root", "z"]), s("y", parents=["x"]), s("z", parents=["y"])),
            "$.steps[1].parents",
            "cycle between steps 'x', 'y', 'z'",
        ),
        (wf(s("a"), s("b"), s("a")), "$.steps[2].id", "duplicate step id 'a'"),
        (wf(s("2pass")), "$.steps[0].id", "not an identifier: '2pass'"),
        (wf(s("a.b")), "$.steps[0].id", "not an identifier: 'a.b'"),
        (wf(), "$.steps", "a workflow needs at least one step"),
        (wf({"id": "a", "job_type": ""}), "$.steps[0].job_type", "a step needs a job type"),
        (wf(s("a", retry={"max_attempts": 0})), "$.steps[0].retry.max_attempts", "must be at least 1"),
        (wf(s("a", timeout_s=0)), "$.steps[0].timeout_s", "must be positive"),
    ],
    ids=["unknown-parent", "own-parent", "cycle", "cycle-after-root", "duplicate-step", "bad-id",
         "dotted-id", "no-steps", "empty-job-type", "zero-attempts", "zero-timeout"],
)
def test_graph_errors_are_refused_with_their_path(data: dict[str, Any], path: str, reason: str) -> None:
    error = refused(data)
    assert (error.path, error.reason) == (path, reason)


# --- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"id": "n", "type": "integer", "default": "3"}, "$.parameters[0].default", "expected integer, got str '3'"),
        ({"id": "n", "type": "integer", "default": True}, "$.parameters[0].default", "expected integer, got bool True"),
        ({"id": "f", "type": "boolean", "default": "yes"}, "$.parameters[0].default", "expected boolean, got str 'yes'"),
        ({"id": "l", "type": "array_of_strings", "default": ["a", 1]}, "$.parameters[0].default",
         "expected array_of_strings, got list ['a', 1]"),
        ({"id": "o", "type": "object", "default": [1]}, "$.parameters[0].default", "expected object, got list [1]"),
        ({"id": "n", "type": "float"}, "$.parameters[0].type",
         ("Invalid enum value 'float'; expected one of: array_of_integers, array_of_strings, boolean, integer, "
          "number, object, string")),
        ({"id": "my param"}, "$.parameters[0].id", "not an identifier: 'my param'"),
    ],
    ids=["int-as-str", "bool-is-not-int", "bool-as-str", "mixed-list", "object-as-list", "unknown-type", "bad-id"],
)
def test_bad_parameter_declarations_are_refused(spec: dict[str, Any], path: str, reason: str) -> None:
    error = refused(wf(s("a"), parameters=[spec]))
    assert (error.path, error.reason) == (path, reason)


def test_a_duplicate_parameter_is_refused() -> None:
    error = refused(wf(s("a"), parameters=[{"id": "src"}, {"id": "src"}]))
    assert (error.path, error.reason) == ("$.parameters[1].id", "duplicate parameter id 'src'")


PARAMS = build_definition(
    wf(
        s("a"),
        parameters=[
            {"id": "source"},
            {"id": "height", "type": "integer", "default": 720},
            {"id": "ratio", "type": "number", "required": False},
            {"id": "tags", "type": "array_of_strings", "required": False},
        ],
    )
)


def test_resolve_parameters_fills_defaults_and_leaves_out_absent_optionals() -> None:
    assert resolve_parameters(PARAMS, {"source": "in.mov"}) == {"source": "in.mov", "height": 720}
    assert resolve_parameters(PARAMS, {"source": "in.mov", "height": 1080, "ratio": 1}) == {
        "source": "in.mov", "height": 1080, "ratio": 1,
    }


@pytest.mark.parametrize(
    ("given", "path", "reason"),
    [
        ({}, "$.parameters.source", "missing required parameter 'source'"),
        ({"source": 3}, "$.parameters.source", "expected string, got int 3"),
        ({"source": "x", "height": "720"}, "$.parameters.height", "expected integer, got str '720'"),
        ({"source": "x", "height": 7.5}, "$.parameters.height", "expected integer, got float 7.5"),
        ({"source": "x", "ratio": False}, "$.parameters.ratio", "expected number, got bool False"),
        ({"source": "x", "tags": "a,b"}, "$.parameters.tags", "expected array_of_strings, got str 'a,b'"),
        ({"source": "x", "colour": "red"}, "$.parameters.colour", "unknown parameter 'colour'"),
    ],
    ids=["missing", "int-for-string", "str-for-int", "float-for-int", "bool-for-number", "str-for-list", "unknown"],
)
def test_bad_start_parameters_are_refused(given: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        resolve_parameters(PARAMS, given)
    assert (caught.value.path, caught.value.reason) == (path, reason)


def test_a_start_value_is_kept_as_its_declared_type() -> None:
    # msgspec checks the value: an integer stays an integer for a number, a Python tuple
    # becomes the list a stored and reloaded workflow would hold.
    resolved = resolve_parameters(PARAMS, {"source": "x", "ratio": 2, "tags": ("a", "b")})
    assert resolved == {"source": "x", "height": 720, "ratio": 2, "tags": ["a", "b"]}
    assert type(resolved["ratio"]) is int and type(resolved["tags"]) is list


# --- templates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (wf(s("a", parameters={"src": "{workflow.nope}"})), "$.steps[0].parameters.src",
         "unknown workflow parameter in {workflow.nope}"),
        (wf(s("a", parameters={"opts": {"deep": ["{workflow.nope}"]}})), "$.steps[0].parameters.opts",
         "unknown workflow parameter in {workflow.nope}"),
        (wf(s("a", parameters={"src": "{workflow.source.path}"}), parameters=[{"id": "source"}]),
         "$.steps[0].parameters.src", "unknown workflow parameter in {workflow.source.path}"),
        (wf(s("a"), s("b"), s("c", parents=["a"], parameters={"x": "{steps.b.outputs.y}"})),
         "$.steps[2].parameters.x", "{steps.b.outputs.y} refers to 'b', which is not an ancestor of 'c'"),
        (wf(s("a", parameters={"x": "{steps.b.outputs.y}"}), s("b", parents=["a"])),
         "$.steps[0].parameters.x", "{steps.b.outputs.y} refers to 'b', which is not an ancestor of 'a'"),
        (wf(s("a"), s("b", parents=["a"], condition="{steps.c.outputs.ok}"), s("c")),
         "$.steps[1].condition", "{steps.c.outputs.ok} refers to 'c', which is not an ancestor of 'b'"),
        (wf(s("a", outputs=["x"]), s("b", parents=["a"], parameters={"v": "{steps.a.outputs.y}"})),
         "$.steps[1].parameters.v", "step 'a' declares no output 'y'"),
        (wf(s("a"), s("b", parents=["a"], parameters={"v": "{steps.a.y}"})),
         "$.steps[1].parameters.v", "expected {steps.STEP.outputs.NAME}, got {steps.a.y}"),
        (wf(s("a", parameters={"f": "{item}"})), "$.steps[0].parameters.f", "{item} is only bound in a step with fan_out"),
        (wf(s("a", fan_out="{item}")), "$.steps[0].fan_out", "{item} is only bound in a step with fan_out"),
        (wf(s("a", parameters={"home": "{env.HOME}"})), "$.steps[0].parameters.home", "unknown name 'env' in {env.HOME}"),
        (wf(s("a", parameters={"f": "{__import__}"})), "$.steps[0].parameters.f",
         "unknown name '__import__' in {__import__}"),
        (wf(s("a", parameters={"f": "{workflow.x"})), "$.steps[0].parameters.f",
         "unbalanced '{' in template '{workflow.x' (write {{)"),
        (wf(s("a", condition="{a b}")), "$.steps[0].condition", "bad name {a b} in template '{a b}'"),
    ],
    ids=["unknown-param", "nested-unknown-param", "param-attribute", "sibling", "descendant", "condition-not-ancestor",
         "undeclared-output", "bad-steps-shape", "item-without-fan-out", "item-in-fan-out", "unknown-head",
         "dunder", "unbalanced", "bad-name"],
)
def test_templates_that_read_unknown_names_are_refused(data: dict[str, Any], path: str, reason: str) -> None:
    error = refused(data)
    assert (error.path, error.reason) == (path, reason)


def test_templates_may_read_params_ancestors_and_the_item() -> None:
    definition = build_definition(
        wf(
            s("a", outputs=["files"]),
            s("b", parents=["a"]),
            s("c", parents=["b"], fan_out="{steps.a.outputs.files}", condition="not {workflow.dry}",
              parameters={"f": "{item.path}", "from_a": "{steps.a.outputs.files}", "n": "{{literal}}"}),
            parameters=[{"id": "dry", "type": "boolean", "default": False}],
        )
    )
    assert definition.step("c").fan_out == "{steps.a.outputs.files}"


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (wf(s("a"), hooks={"on_error": [{"url": "http://h", "body": "{steps.ghost.outputs.x}"}]}),
         "$.hooks.on_error[0].body", "{steps.ghost.outputs.x} refers to 'ghost', which is not a step of this workflow"),
        (wf(s("a"), hooks={"on_error": [{"url": "http://h/{steps.a.x}"}]}),
         "$.hooks.on_error[0].url", "expected {steps.STEP.outputs.NAME}, got {steps.a.x}"),
        (wf(s("a"), hooks={"on_completed": [{"url": "http://h", "headers": {"A": "{item}"}}]}),
         "$.hooks.on_completed[0].headers.A", "{item} is only bound in a step with fan_out"),
        (wf(s("a"), hooks={"on_completed": [{"url": "http://h/{run.nope}"}]}),
         "$.hooks.on_completed[0].url", "unknown {run.nope}; run fields: id, status, reason, definition, version"),
        (wf(s("a", parameters={"r": "{run.id}"})), "$.steps[0].parameters.r", "{run.id} is only bound in hooks"),
        (wf(s("a"), hooks={"on_error": [{"url": "http://h/{workflow.nope}"}]}),
         "$.hooks.on_error[0].url", "unknown workflow parameter in {workflow.nope}"),
    ],
    ids=["unknown-step", "bad-steps-shape", "item", "unknown-run-field", "run-in-a-step", "unknown-param"],
)
def test_hook_templates_follow_the_same_rules_as_step_templates(data: dict[str, Any], path: str, reason: str) -> None:
    error = refused(data)
    assert (error.path, error.reason) == (path, reason)


def test_hooks_may_read_any_step_and_the_run() -> None:
    definition = build_definition(wf(
        s("a", outputs=["x"]), s("b"),
        hooks={"on_completed": [{"url": "http://h/{run.id}/{run.status}", "body": "{steps.b.outputs.y}"}],
               "on_error": [{"url": "http://h", "body": {"why": "{run.reason}", "a": "{steps.a.outputs.x}"}}]},
    ))
    assert len(definition.hooks.on_error) == 1


# --- semver, msgspec types, unknown fields ------------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0.0", "1.x.0", ""])
def test_a_version_that_is_not_semver_is_refused(version: str) -> None:
    error = refused(wf(s("a"), version=version))
    assert (error.path, error.reason) == ("$.version", f"not a semantic version: {version!r}")


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (wf(s("a", timeout_s="x")), "$.steps[0].timeout_s", "Expected `float | null`, got `str`"),
        (wf(s("a"), s("b", retry={"max_attempts": "3"})), "$.steps[1].retry.max_attempts", "Expected `int`, got `str`"),
        (wf(s("a", parents="b")), "$.steps[0].parents", "Expected `array`, got `str`"),
        (wf(s("a"), tags="x"), "$.tags", "Expected `array`, got `str`"),
        ({"identifier": "x"}, "$", "Object missing required field `steps`"),
        (wf({"id": "a"}), "$.steps[0]", "Object missing required field `job_type`"),
        (wf(s("a"), colour="red"), "$", "Object contains unknown field `colour`"),
        (wf(s("a", colour="red")), "$.steps[0]", "Object contains unknown field `colour`"),
        (wf(s("a", retry={"tries": 2})), "$.steps[0].retry", "Object contains unknown field `tries`"),
        (wf(s("a"), parameters=[{"id": "p", "kind": "x"}]), "$.parameters[0]", "Object contains unknown field `kind`"),
        (wf(s("a"), rights={"fly": ["ops"]}), "$.rights", "Invalid enum value 'fly' (in a key); expected one of: abort, create, delete, retry, update, view"),
    ],
    ids=["timeout-str", "attempts-str", "parents-str", "tags-str", "no-steps-field", "no-job-type",
         "unknown-top-field", "unknown-step-field", "unknown-retry-field", "unknown-param-field", "unknown-right"],
)
def test_type_errors_and_unknown_fields_carry_msgspec_paths(data: dict[str, Any], path: str, reason: str) -> None:
    error = refused(data)
    assert (error.path, error.reason) == (path, reason)


# --- files --------------------------------------------------------------------------------

TOML_TEXT = """
identifier = "transcode"
version = "1.2.0"

[[parameters]]
id = "source"

[[steps]]
id = "probe"
job_type = "ffprobe"
parameters = { src = "{workflow.source}" }

[[steps]]
id = "encode"
job_type = "ffmpeg"
parents = ["probe"]
timeout_s = 30
retry = { max_attempts = 2 }
"""

AS_DICT = wf(
    {"id": "probe", "job_type": "ffprobe", "parameters": {"src": "{workflow.source}"}},
    {"id": "encode", "job_type": "ffmpeg", "parents": ["probe"], "timeout_s": 30, "retry": {"max_attempts": 2}},
    version="1.2.0",
    parameters=[{"id": "source"}],
)


def test_json_toml_and_python_give_the_same_definition(tmp_path: Path) -> None:
    json_file = tmp_path / "transcode.json"
    json_file.write_text(json.dumps(AS_DICT))
    toml_file = tmp_path / "transcode.toml"
    toml_file.write_text(TOML_TEXT)
    from_json = load_definition(json_file)
    assert load_definition(str(toml_file)) == from_json
    assert build_definition(AS_DICT) == from_json
    assert from_json.step("encode").timeout_s == 30.0


def test_a_json_file_with_a_type_error_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(wf(s("a"), s("b", timeout_s="x"))))
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert (caught.value.path, caught.value.reason) == ("$.steps[1].timeout_s", "Expected `float | null`, got `str`")


def test_a_toml_file_with_a_type_error_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TOML_TEXT.replace("timeout_s = 30", 'timeout_s = "x"'))
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert (caught.value.path, caught.value.reason) == ("$.steps[1].timeout_s", "Expected `float | null`, got `str`")


def test_a_toml_file_is_validated_like_any_other(tmp_path: Path) -> None:
    path = tmp_path / "cycle.toml"
    path.write_text(TOML_TEXT.replace('id = "probe"\njob_type = "ffprobe"', 'id = "probe"\njob_type = "ffprobe"\nparents = ["encode"]'))
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert (caught.value.path, caught.value.reason) == ("$.steps[0].parents", "cycle between steps 'probe', 'encode'")


@pytest.mark.parametrize("name", ["workflow.yaml", "workflow.yml", "workflow", "workflow.txt"])
def test_a_file_neither_toml_nor_json_is_refused_by_its_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("identifier: x\n")
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert caught.value.reason.startswith("unsupported definition format") and "(use .toml or .json)" in str(
        caught.value)


def test_a_bad_word_deep_in_a_step_lists_the_good_ones() -> None:
    error = refused(wf(s("a", mode="jobs")))
    assert (error.path, error.reason) == ("$.steps[0].mode",
                                          "Invalid enum value 'jobs'; expected one of: job, notification")


@pytest.mark.parametrize(("text", "fmt"), [("{nope", "json"), ("identifier = ", "toml")])
def test_malformed_text_is_a_definition_error_at_the_root(text: str, fmt: Any) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, format=fmt)
    assert caught.value.path == "$"
    assert caught.value.reason


# --- command-line values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "text", "value"),
    [
        ("string", "a=b, c", "a=b, c"),
        ("integer", "42", 42),
        ("integer", "-3", -3),
        ("number", "2.5", 2.5),
        ("boolean", "true", True),
        ("boolean", "Yes", True),
        ("boolean", "1", True),
        ("boolean", "off", False),
        ("boolean", "NO", False),
        ("array_of_strings", "a,b,,c", ["a", "b", "c"]),
        ("array_of_strings", '["a,b", "c"]', ["a,b", "c"]),
        ("array_of_strings", "", []),
        ("array_of_integers", "1,2,3", [1, 2, 3]),
        ("array_of_integers", "[4, 5]", [4, 5]),
        ("object", '{"k": [1, 2]}', {"k": [1, 2]}),
    ],
)
def test_coerce_parameter_turns_cli_text_into_the_declared_type(type_: Any, text: str, value: Any) -> None:
    result = coerce_parameter(ParameterSpec(id="p", type=type_), text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("type_", "text"),
    [
        ("integer", "4x"),
        ("integer", "2.5"),
        ("number", "fast"),
        ("boolean", "maybe"),
        ("array_of_strings", '["a", 1]'),
        ("array_of_integers", "1,x"),
        ("array_of_integers", "[1, "),
        ("object", "[1]"),
        ("object", "k=v"),
    ],
)
def test_coerce_parameter_refuses_text_of_the_wrong_type(type_: Any, text: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        coerce_parameter(ParameterSpec(id="p", type=type_), text)
    assert (caught.value.path, caught.value.reason) == ("$.parameters.p", f"expected {type_}, got {text!r}")
