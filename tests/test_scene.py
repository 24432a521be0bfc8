"""Tests for kvis_parallel.scene: validation tables and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kvis_parallel.errors import UserError
from kvis_parallel.scene import Scene

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
