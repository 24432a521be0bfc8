"""Tests for kvis_parallel.offscreen: window class choice, thread cap and EGL device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import require

from kvis_parallel import offscreen
from kvis_parallel.errors import UserError
from kvis_parallel.offscreen import (
    EGL_WINDOW,
    OSMESA_WINDOW,
    choose_window_class,
    configure_offscreen,
)


# A user-chosen window class, so that configure_offscreen runs no probe.
SKIP_WINDOW_CHOICE = {"VTK_DEFAULT_OPENGL_WINDOW": EGL_WINDOW}


def fail_probe() -> bool:
    raise AssertionError("the probe must not run in this case")


@pytest.mark.parametrize("environ, egl, osmesa, expected", [
    ({}, True, False, EGL_WINDOW),
    ({}, True, True, EGL_WINDOW),
    ({}, False, True, OSMESA_WINDOW),
    ({"DISPLAY": ""}, False, True, OSMESA_WINDOW),
    # Neither works: EGL still keeps VTK away from X, and a warning names the packages.
    ({}, False, False, EGL_WINDOW),
])
def test_window_choice_without_display(environ, egl, osmesa, expected):
    chosen = choose_window_class(environ, egl_usable=lambda: egl, osmesa_usable=lambda: osmesa)
    assert chosen == expected


@pytest.mark.parametrize("environ", [
    {"DISPLAY": ":0"},
    {"VTK_DEFAULT_OPENGL_WINDOW": "vtkXOpenGLRenderWindow"},
    {"VTK_DEFAULT_OPENGL_WINDOW": OSMESA_WINDOW},
])
def test_window_choice_left_to_user_or_vtk(environ):
    assert choose_window_class(environ, egl_usable=fail_probe, osmesa_usable=fail_probe) is None


@pytest.mark.parametrize("egl, expected", [(True, EGL_WINDOW), (False, OSMESA_WINDOW)])
def test_unreachable_display_treated_as_none(egl, expected):
    chosen = choose_window_class({"DISPLAY": "gone:12"}, egl_usable=lambda: egl,
                                 osmesa_usable=lambda: True, x_usable=lambda: False)
    assert chosen == expected


def test_fallback_warning_names_packages(caplog):
    choose_window_class({}, egl_usable=lambda: False, osmesa_usable=lambda: False)
    assert offscreen.OSMESA_PACKAGE in caplog.text
    assert offscreen.EGL_PACKAGES in caplog.text


def test_configure_sets_osmesa_when_egl_fails(monkeypatch):
    monkeypatch.setattr(offscreen, "egl_usable", lambda environ=None: False)
    monkeypatch.setattr(offscreen, "osmesa_usable", lambda: True)
    environ: dict[str, str] = {}
    configure_offscreen(1, environ=environ)
    assert environ["VTK_DEFAULT_OPENGL_WINDOW"] == OSMESA_WINDOW


def test_configure_keeps_user_window(monkeypatch):
    environ = {"VTK_DEFAULT_OPENGL_WINDOW": OSMESA_WINDOW}
    configure_offscreen(1, environ=environ)
    assert environ["VTK_DEFAULT_OPENGL_WINDOW"] == OSMESA_WINDOW


@pytest.mark.parametrize("cores, local_ranks, expected", [
    (16, 1, 16), (16, 4, 4), (16, 5, 3), (2, 8, 1), (1, 1, 1),
])
def test_llvmpipe_threads_divided_among_ranks(monkeypatch, cores, local_ranks, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    environ = dict(SKIP_WINDOW_CHOICE)
    configure_offscreen(local_ranks, environ=environ)
    assert environ["LP_NUM_THREADS"] == str(expected)


def test_user_llvmpipe_threads_kept():
    environ = {**SKIP_WINDOW_CHOICE, "LP_NUM_THREADS": "7"}
    configure_offscreen(4, environ=environ)
    assert environ["LP_NUM_THREADS"] == "7"


def test_local_ranks_below_one_rejected():
    with pytest.raises(UserError, match="ranks per node"):
        configure_offscreen(0, environ=dict(SKIP_WINDOW_CHOICE))


@pytest.mark.parametrize("devices, local_rank, expected", [
    ("4", 0, "0"), ("4", 5, "1"), ("1", 3, "0"), ("2", None, None),
])
def test_egl_device_from_local_rank(devices, local_rank, expected):
    environ = {**SKIP_WINDOW_CHOICE, "KVIS_EGL_DEVICES": devices}
    configure_offscreen(1, local_rank=local_rank, environ=environ)
    assert environ.get("VTK_DEFAULT_EGL_DEVICE_INDEX") == expected


def test_user_egl_device_kept():
    environ = {**SKIP_WINDOW_CHOICE, "KVIS_EGL_DEVICES": "4", "VTK_DEFAULT_EGL_DEVICE_INDEX": "2"}
    configure_offscreen(1, local_rank=1, environ=environ)
    assert environ["VTK_DEFAULT_EGL_DEVICE_INDEX"] == "2"


@pytest.mark.parametrize("environ", [
    {"VTK_DEFAULT_EGL_DEVICE_INDEX": "gpu0"},
    {"VTK_DEFAULT_EGL_DEVICE_INDEX": "-1"},
    {"KVIS_EGL_DEVICES": "0"},
    {"KVIS_EGL_DEVICES": "two"},
])
def test_invalid_egl_device_variables_rejected(environ):
    with pytest.raises(UserError, match="invalid"):
        configure_offscreen(1, local_rank=0, environ={**SKIP_WINDOW_CHOICE, **environ})


def run_python(code: str, **changes: str | None) -> dict:
    """Run ``code`` in a fresh interpreter with environment changes and parse its JSON output."""
    environ = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    result = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


RENDER_CHECK = """
import json, os
from kvis_parallel.offscreen import configure_offscreen
configure_offscreen(2)
from vtkmodules.vtkRenderingCore import vtkRenderWindow
import vtkmodules.vtkRenderingOpenGL2
window = vtkRenderWindow()
window.SetOffScreenRendering(True)
window.SetSize(32, 32)
window.Render()
print(json.dumps({"class": window.GetClassName(), "env": os.environ.get("VTK_DEFAULT_OPENGL_WINDOW"),
                  "threads": os.environ.get("LP_NUM_THREADS")}))
"""


def test_process_without_display_renders_through_egl():
    result = run_python(RENDER_CHECK, DISPLAY=None, VTK_DEFAULT_OPENGL_WINDOW=None, LP_NUM_THREADS=None)
    assert result["env"] == EGL_WINDOW
    assert result["class"] == EGL_WINDOW
    assert int(result["threads"]) >= 1


def test_egl_probe_detects_missing_driver():
    code = ("import json; from kvis_parallel.offscreen import egl_usable; "
            "print(json.dumps({'usable': egl_usable()}))")
    assert run_python(code)["usable"] is True
    # glvnd finds no vendor library, as on a node without Mesa's or NVIDIA's EGL.
    broken = run_python(code, __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent/egl_vendor.json")
    assert broken["usable"] is False


def test_unreachable_display_renders_through_egl():
    result = run_python(RENDER_CHECK, DISPLAY=":93", VTK_DEFAULT_OPENGL_WINDOW=None)
    assert result["env"] == EGL_WINDOW
    assert result["class"] == EGL_WINDOW


def test_second_call_recomputes_own_thread_cap(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    environ = dict(SKIP_WINDOW_CHOICE)
    configure_offscreen(1, environ=environ)
    assert environ["LP_NUM_THREADS"] == "16"
    configure_offscreen(8, environ=environ)
    assert environ["LP_NUM_THREADS"] == "2"


def osmesa_installed() -> bool:
    """Return whether the dynamic linker can find libOSMesa (Debian: libosmesa6)."""
    return "libOSMesa.so" in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout


def test_render_falls_back_to_osmesa(tmp_path, cavity, kvis, movie_frames, monkeypatch):
    require(osmesa_installed(), "libOSMesa is not installed (apt-get install libosmesa6)")
    common = ["render", cavity, "--size", "160x120", "--field", "p"]
    # The subprocesses choose their window themselves, as on a fresh headless node.
    for name in ("DISPLAY", "VTK_DEFAULT_OPENGL_WINDOW"):
        monkeypatch.delenv(name, raising=False)

    egl = kvis([*common, "-o", tmp_path / "egl.mp4"])
    # A vendor list that names no file leaves libglvnd without an EGL driver.
    broken_egl = {"__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "none.json")}
    osmesa = kvis([*common, "-o", tmp_path / "osmesa.mp4", "-v"], env=broken_egl)

    assert egl.returncode == 0, egl.stderr
    assert osmesa.returncode == 0, osmesa.stderr
    assert "rendering through OSMesa instead" in osmesa.stderr
    egl_movie = movie_frames(tmp_path / "egl.mp4")
    osmesa_movie = movie_frames(tmp_path / "osmesa.mp4")
    assert len(osmesa_movie.frames) == len(egl_movie.frames)
    # Both are Mesa's llvmpipe behind a different window system, so the pictures match.
    for egl_frame, osmesa_frame in zip(egl_movie.frames, osmesa_movie.frames):
        difference = np.abs(egl_frame.astype(int) - osmesa_frame.astype(int))
        assert difference.max() <= 2
