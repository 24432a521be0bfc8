"""Tests for kvis_parallel.scene: validation tables and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from kvis_parallel.errors import UserError
from kvis_parallel.scene import (
    MAX_LABEL_CHARS,
    Scene,
    finalise_colour_range,
    plane_misses_box,
    format_time_label,
    scalar_bar_title,
    slice_miss_error,
    widen_constant_range,
)

FULL_SCENE = Scene(
    field="U", association="cell", component="x", parts=("internal", "movingWall"),
    colormap="coolwarm_r", range=(-1.5, 2.0), log=False, view="+y", zoom=1.5,
    slice=(0.0, 0.0, 0.05, 0.0, 0.0, 1.0), edges=True, size=(640, 360), fps=25, crf=20,
    preset="fast", title="cavity", time_format="{index}: t = {time:.2f}", fxaa=True,
    background=(0.0, 0.0, 0.0), nan_color=(0.5, 0.5, 0.5),
)


@pytest.mark.parametrize("scene", [Scene(), FULL_SCENE, Scene(range=(1e-3, 10.0), log=True)])
def test_json_round_trip(scene):
    text = scene.to_json()
    assert json.loads(text)["size"] == list(scene.size)
    restored = Scene.from_json(text)
    assert restored == scene
    assert isinstance(restored.size, tuple)
    assert isinstance(restored.parts, tuple)


def test_json_keys_are_field_names():
    keys = set(json.loads(Scene().to_json()))
    assert keys == {field.name for field in dataclasses.fields(Scene)}


@pytest.mark.parametrize("changes, message", [
    ({"association": "vertex"}, "association"),
    ({"component": "w"}, "component"),
    ({"view": "top"}, "view"),
    ({"preset": "turbo"}, "preset"),
    ({"colormap": "rainbow"}, "colormap"),
    ({"colormap": "rainbow_r"}, "rainbow_r"),
    ({"parts": ()}, "parts"),
    ({"parts": ("internal", "")}, "parts"),
    ({"range": (1.0, 1.0)}, "range"),
    ({"range": (2.0, 1.0)}, "range"),
    ({"range": (0.0, float("nan"))}, "range"),
    ({"range": (1.0, 2.0, 3.0)}, "range"),
    ({"range": (0.0, 1.0), "log": True}, "log"),
    ({"size": (15, 100)}, "size"),
    ({"size": (100, 8000)}, "size"),
    ({"size": (100.5, 100)}, "size"),
    ({"fps": 0}, "fps"),
    ({"fps": 241}, "fps"),
    ({"fps": 10.5}, "fps"),
    ({"fps": True}, "fps"),
    ({"crf": -1}, "crf"),
    ({"crf": 52}, "crf"),
    ({"zoom": 0.0}, "zoom"),
    ({"zoom": float("inf")}, "zoom"),
    ({"slice": (0, 0, 0, 0, 0, 0)}, "slice"),
    ({"slice": (0, 0, 0, 1)}, "slice"),
    ({"slice": (0, 0, float("nan"), 0, 0, 1)}, "slice"),
    ({"time_format": "{step}"}, "time format"),
    ({"time_format": "{time:d}"}, "time format"),
    ({"time_format": "{time.real.x}"}, "time format"),
    ({"time_format": "{"}, "time format"),
    ({"background": (0.0, 0.0, 2.0)}, "background"),
    ({"nan_color": (1.0, 0.0)}, "nan_color"),
    ({"log": "yes"}, "log"),
    ({"field": 3}, "field"),
    ({"title": ["a"]}, "title"),
])
def test_invalid_setting_rejected(changes, message):
    with pytest.raises(UserError, match=message):
        Scene(**changes).validate()


@pytest.mark.parametrize("changes", [
    {}, {"colormap": "jet_r"}, {"range": (0, 1)}, {"size": (16, 16)}, {"size": (7680, 4320)},
    {"fps": 240}, {"crf": 0}, {"zoom": 0.05}, {"view": "iso"}, {"time_format": "{label}"},
    {"slice": (0, 0, 0, 0, 1, 0)},
])
def test_valid_setting_accepted(changes):
    scene = Scene(**changes)
    assert scene.validate() is scene


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"colour": "red"}', "colour"),
    ('{"fps": "10"}', "fps"),
    ('{"size": [640]}', "size"),
])
def test_from_json_rejects_bad_input(text, message):
    with pytest.raises(UserError, match=message):
        Scene.from_json(text)


@pytest.mark.parametrize("size, expected", [
    ((1280, 720), (1280, 720)), ((1281, 720), (1282, 720)), ((161, 121), (162, 122)),
])
def test_even_size(size, expected):
    assert Scene(size=size).even_size() == expected


def test_replace_returns_changed_copy():
    scene = Scene()
    changed = scene.replace(fps=30)
    assert changed.fps == 30
    assert scene.fps == Scene().fps


# --- Time format -------------------------------------------------------------------


@pytest.mark.parametrize(("time_format", "named"), [
    ("{time:>99999999}", "at most 64"),
    ("{time:.65f}", "at most 64"),
    ("{index:099999}", "at most 64"),
    ("{label.__class__.__mro__}", "unknown field"),
    ("{label[0]}", "unknown field"),
    ("{0}", "unknown field"),
    ("{}", "unknown field"),
    ("{time:{index}}", "nested"),
    ("{time!x}", "conversion"),
    ("{time:>>>5}", "invalid format specification"),
    ("x" * 201, "201 characters"),
    ("{label:>64}" * 4, "the label has"),
])
def test_time_format_rejected(time_format, named):
    with pytest.raises(UserError, match="invalid time format") as raised:
        Scene(time_format=time_format).validate()
    assert named in str(raised.value)


@pytest.mark.parametrize("time_format", [
    "t = {time:.3g} s", "{index:05d}", "{label!r}", "{time:>64.64f}", "{{literal}} {time:_>12,.2f}",
    "{time:+.2e}", "{index:#x}", "{label:^20}",
])
def test_time_format_accepted(time_format):
    assert Scene(time_format=time_format).validate().time_format == time_format


def test_time_label_clipped():
    text = format_time_label("{time:.64f}", 1e300, 0, "")
    assert len(text) == MAX_LABEL_CHARS
    assert text.endswith("...")


def test_time_label_fields():
    assert format_time_label("{index}: {label} at {time:.2f}", 0.25, 3, "cavity_20") == "3: cavity_20 at 0.25"


# --- Colour range ------------------------------------------------------------------


def test_log_range_rejects_negative_minimum():
    with pytest.raises(UserError) as raised:
        finalise_colour_range(Scene(field="p", log=True), -4.37, 4.85)
    message = str(raised.value)
    assert "'p'" in message
    assert "-4.37" in message
    assert "--range MIN,MAX" in message
    assert "MIN > 0" in message


def test_log_range_rejects_zero_minimum():
    with pytest.raises(UserError, match="above zero"):
        finalise_colour_range(Scene(field="k", log=True), 0.0, 2.0)


def test_log_range_kept_when_positive():
    assert finalise_colour_range(Scene(field="k", log=True), 0.5, 2.0) == (0.5, 2.0)


def test_given_range_wins():
    scene = Scene(field="p", log=True, range=(0.1, 5.0))
    assert finalise_colour_range(scene, -4.0, 4.0) == (0.1, 5.0)


@pytest.mark.parametrize(("value", "log", "expected"), [
    (1.0, False, (0.99, 1.01)),
    (-200.0, False, (-202.0, -198.0)),
    (0.0, False, (-0.5, 0.5)),
    (1.0, True, (1 / 1.01, 1.01)),
])
def test_constant_range_widened(value, log, expected, caplog):
    with caplog.at_level(logging.INFO):
        widened = widen_constant_range(value, value, log)
    assert widened == pytest.approx(expected)
    assert "constant" in caplog.text


def test_varying_range_unchanged():
    assert widen_constant_range(-1.0, 2.0) == (-1.0, 2.0)


# --- Scalar bar title --------------------------------------------------------------


@pytest.mark.parametrize(("field", "component", "components", "expected"), [
    ("U", "x", 3, "U_x"),
    ("U", "z", None, "U_z"),
    ("U", "mag", 3, "|U|"),
    ("U", "mag", None, "U"),
    ("p", "mag", 1, "p"),
    (None, "mag", None, ""),
])
def test_scalar_bar_title(field, component, components, expected):
    assert scalar_bar_title(field, component, components) == expected


# --- Slice plane ------------------------------------------------------------------------

CAVITY_BOUNDS = (0.0, 0.1, 0.0, 0.1, 0.0, 0.01)


@pytest.mark.parametrize(("plane", "misses"), [
    ((0.05, 0.05, 0.005, 0, 0, 1), False),
    ((0.0, 0.0, 0.01, 0, 0, 1), False),
    ((5, 5, 5, 0, 0, 1), True),
    ((0, 0, -1, 0, 0, 1), True),
    ((0.3, 0, 0, 1, 1, 0), True),
    ((0.1, 0, 0, 1, 1, 0), False),
])
def test_plane_misses_box(plane, misses):
    assert plane_misses_box(plane, CAVITY_BOUNDS) == misses


def test_slice_miss_error_names_plane_and_mesh():
    message = str(slice_miss_error((5, 5, 5, 0, 0, 1), CAVITY_BOUNDS))
    assert "misses the mesh" in message
    assert "(5, 5, 5)" in message
    assert "normal (0, 0, 1)" in message
    assert "x from 0 to 0.1" in message
    assert "--range" not in message
