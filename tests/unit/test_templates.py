"""Templates: values in, values out, and never a line of code run."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from stepflow.engine.templates import TemplateError, references, render, truth

SCOPE: dict[str, Any] = {
    "workflow": {
        "name": "clip",
        "height": 720,
        "heights": [480, 720],
        "flag": True,
        "off": False,
        "empty": [],
        "zero": 0,
        "words": "no",
        "opts": {"crf": 23},
    },
    "steps": {"probe": {"outputs": {"duration": 12.5, "files": ["a.mp4", "b.mp4"]}}},
    "item": {"path": "/in/a.mov", "index": 3},
}


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{workflow.height}", 720),
        ("{workflow.heights}", [480, 720]),
        ("{workflow.flag}", True),
        ("{workflow.opts}", {"crf": 23}),
        ("{ workflow.height }", 720),
        ("{steps.probe.outputs.duration}", 12.5),
        ("{item}", {"path": "/in/a.mov", "index": 3}),
        ("{item.index}", 3),
    ],
)
def test_a_whole_placeholder_keeps_the_type_of_its_value(template: str, value: Any) -> None:
    result = render(template, SCOPE)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("out/{workflow.name}_{workflow.height}p.mp4", "out/clip_720p.mp4"),
        ("{workflow.height}{workflow.name}", "720clip"),
        (" {workflow.height}", " 720"),
        ("len={steps.probe.outputs.duration}s", "len=12.5s"),
        ("{workflow.flag}!", "True!"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_placeholders_inside_text_are_interpolated(template: str, text: str) -> None:
    assert render(template, SCOPE) == text


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("{{literal}}", "{literal}"),
        ("{{workflow.name}}", "{workflow.name}"),
        ("{{{workflow.name}}}", "{clip}"),
        ('{{"json": {workflow.height}}}', '{"json": 720}'),
        ("}}", "}"),
    ],
)
def test_doubled_braces_are_literal_braces(template: str, text: str) -> None:
    assert render(template, SCOPE) == text
    assert all(ref[0] == "workflow" for ref in references(template))


def test_nested_dicts_and_lists_are_rendered_and_other_values_kept() -> None:
    value = {
        "input": "{item.path}",
        "renditions": [{"height": "{workflow.height}", "name": "{workflow.name}-{workflow.height}"}],
        "copies": ("{workflow.zero}",),
        "crf": 23,
        "two_pass": False,
        "note": None,
    }
    assert render(value, SCOPE) == {
        "input": "/in/a.mov",
        "renditions": [{"height": 720, "name": "clip-720"}],
        "copies": [0],
        "crf": 23,
        "two_pass": False,
        "note": None,
    }


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("{workflow.nope}", "{workflow.nope}"),
        ("at {workflow.nope}", "{workflow.nope}"),
        ("{steps.encode.outputs.file}", "{steps.encode}"),
        ("{steps.probe.outputs.size}", "{steps.probe.outputs.size}"),
        ("{workflow.name.length}", "{workflow.name.length}"),
        ("{item.size}", "{item.size}"),
    ],
)
def test_a_name_without_a_value_is_a_template_error(template: str, missing: str) -> None:
    with pytest.raises(TemplateError, match=f"^no value for {missing}$".replace("{", r"\{").replace("}", r"\}")):
        render(template, SCOPE)


@pytest.mark.parametrize("template", ["{workflow.name", "workflow.name}", "a { b", "{a {b}}"])
def test_unbalanced_braces_are_a_parse_error(template: str) -> None:
    with pytest.raises(TemplateError, match="unbalanced"):
        render(template, SCOPE)
    with pytest.raises(TemplateError):
        references(template)


@pytest.mark.parametrize(
    ("condition", "result"),
    [
        ("{workflow.flag}", True),
        ("{workflow.off}", False),
        ("not {workflow.flag}", False),
        ("not {workflow.off}", True),
        ("{workflow.empty}", False),
        ("{workflow.heights}", True),
        ("{workflow.zero}", False),
        ("{workflow.words}", False),
        ("not {workflow.words}", True),
        ("{workflow.name}", True),
        ("{workflow.zero}{workflow.zero}", True),
        (" off ", False),
        ("FALSE", False),
        ("", False),
        ("yes", True),
    ],
)
def test_truth_of_conditions(condition: str, result: bool) -> None:
    assert truth(condition, SCOPE) is result


def test_a_condition_on_a_missing_name_is_an_error_not_false() -> None:
    with pytest.raises(TemplateError):
        truth("not {workflow.nope}", SCOPE)


class Tripwire:
    """A value whose properties and methods have a visible effect: a template must run none."""

    fired: ClassVar[list[str]] = []

    @property
    def secret(self) -> str:
        Tripwire.fired.append("secret")
        return "leaked"

    def __getattr__(self, name: str) -> Any:
        Tripwire.fired.append(name)
        return "leaked"

    def __getitem__(self, key: str) -> Any:
        Tripwire.fired.append(f"[{key}]")
        return "leaked"

    def __str__(self) -> str:
        Tripwire.fired.append("__str__")
        return "leaked"


@pytest.mark.parametrize(
    "template",
    [
        "{__import__}",
        "{__builtins__}",
        "{workflow.__class__}",
        "{workflow.__class__.__mro__}",
        "{workflow.name.upper}",
        "{workflow.trap.secret}",
        "{workflow.trap.anything}",
        "{workflow.trap.__dict__}",
        "{workflow.trap.__class__.__init__.__globals__}",
    ],
)
def test_a_template_only_walks_dict_keys(template: str) -> None:
    Tripwire.fired = []
    scope = {"workflow": {"name": "clip", "trap": Tripwire()}}
    with pytest.raises(TemplateError, match="no value for"):
        render(template, scope)
    assert Tripwire.fired == []


@pytest.mark.parametrize(
    "template",
    [
        "{__import__('os').system('touch /tmp/pwned')}",
        "{workflow.name.upper()}",
        "{workflow['name']}",
        "{workflow.heights[0]}",
        "{1 + 1}",
        "{0}",
        "{}",
        "{workflow..name}",
        "{lambda: 1}",
        "{workflow.name!r}",
        "{workflow.height:>10}",
    ],
)
def test_expressions_calls_and_format_specs_do_not_parse(template: str) -> None:
    with pytest.raises(TemplateError, match="bad name"):
        render(template, SCOPE)


def test_references_lists_the_dotted_names_a_template_reads() -> None:
    template = "{workflow.name}-{{x}}-{steps.probe.outputs.files}-{ item.path }"
    assert references(template) == [("workflow", "name"), ("steps", "probe", "outputs", "files"), ("item", "path")]
