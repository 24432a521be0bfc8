"""Prepare a process for rendering without a display, before VTK is imported.

VTK 9.4 and later choose the OpenGL window class at run time: X first, then
EGL, then OSMesa. Without a ``DISPLAY`` (or with one that cannot be opened)
the X attempt logs an error and can abort the process, so
:func:`configure_offscreen` names the window class in
``VTK_DEFAULT_OPENGL_WINDOW`` itself. VTK reads that variable, and
``VTK_DEFAULT_EGL_DEVICE_INDEX`` for the EGL device, when it creates a render
window. This module must not import VTK.

Mesa's software rasteriser llvmpipe starts one thread per core in every
process, so with several ranks on a node the threads are capped through
``LP_NUM_THREADS``.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, MutableMapping

from .errors import UserError

logger = logging.getLogger(__name__)

EGL_WINDOW = "vtkEGLRenderWindow"
OSMESA_WINDOW = "vtkOSOpenGLRenderWindow"

# Debian 12 package names, for the messages that tell the user what to install.
EGL_PACKAGES = "libegl1 and libegl-mesa0"
OSMESA_PACKAGE = "libosmesa6"

# libOSMesa's soname is .8 in Mesa 20 and later (Debian's libosmesa6), .6 before.
_OSMESA_LIBRARIES = ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so")

# Count of GPUs on each node. When set, a rank uses EGL device local_rank % count.
EGL_DEVICES_VARIABLE = "KVIS_EGL_DEVICES"
EGL_DEVICE_INDEX_VARIABLE = "VTK_DEFAULT_EGL_DEVICE_INDEX"

# Values this module wrote to the environment. A second call recomputes
# these, while values the user set are kept.
_OWN_SETTINGS: dict[str, str] = {}

# Constants from the EGL 1.5 headers and EGL_EXT_platform_device.
_EGL_PLATFORM_DEVICE_EXT = 0x313F
_MAX_EGL_DEVICES = 64


def configure_offscreen(local_ranks: int = 1, *, local_rank: int | None = None,
                        environ: MutableMapping[str, str] | None = None) -> None:
    """Set the environment so that VTK renders offscreen without trying X.

    Call it before the first import of a VTK rendering module. Settings the
    user made in the environment are kept.

    Parameters
    ----------
    local_ranks : int
        Number of rendering processes on this node; llvmpipe gets
        ``max(1, cores // local_ranks)`` threads.
    local_rank : int, optional
        This process's index among the ranks of its node. With
        ``KVIS_EGL_DEVICES=N`` set and no ``VTK_DEFAULT_EGL_DEVICE_INDEX``,
        the rank renders on EGL device ``local_rank % N``.
    environ : mapping, optional
        The environment to change; ``os.environ`` by default.

    Raises
    ------
    UserError
        If ``local_ranks`` is below 1 or an EGL device variable is not a
        whole number.
    """
    if environ is None:
        environ = os.environ
    if local_ranks < 1:
        raise UserError(f"invalid number of ranks per node {local_ranks}: give 1 or more")

    _cap_llvmpipe_threads(environ, local_ranks)
    _choose_egl_device(environ, local_rank)

    chosen_before = _OWN_SETTINGS.get("VTK_DEFAULT_OPENGL_WINDOW")
    if chosen_before and environ.get("VTK_DEFAULT_OPENGL_WINDOW") == chosen_before:
        return
    window = choose_window_class(environ, egl_usable=lambda: egl_usable(environ),
                                 osmesa_usable=osmesa_usable,
                                 x_usable=lambda: x_display_usable(environ["DISPLAY"]))
    if window is not None:
        environ["VTK_DEFAULT_OPENGL_WINDOW"] = _OWN_SETTINGS["VTK_DEFAULT_OPENGL_WINDOW"] = window


def choose_window_class(environ: MutableMapping[str, str], *,
                        egl_usable: Callable[[], bool],
                        osmesa_usable: Callable[[], bool],
                        x_usable: Callable[[], bool] = lambda: True) -> str | None:
    """Pick the VTK OpenGL window class for this process.

    Parameters
    ----------
    environ : mapping
        The process environment; it is only read.
    egl_usable, osmesa_usable, x_usable : callable
        Probes that return whether an EGL display can be initialised,
        whether libOSMesa can be loaded and whether the X display in
        ``DISPLAY`` can be opened. They run only when needed.

    Returns
    -------
    str or None
        The class name for ``VTK_DEFAULT_OPENGL_WINDOW``, or None to keep the
        user's setting or VTK's own choice when a display is set.
    """
    user_choice = environ.get("VTK_DEFAULT_OPENGL_WINDOW")
    if user_choice:
        logger.debug("keeping VTK_DEFAULT_OPENGL_WINDOW=%s set by the user", user_choice)
        return None
    if environ.get("DISPLAY"):
        if x_usable():
            logger.debug("DISPLAY=%s is set: VTK chooses the window class", environ["DISPLAY"])
            return None
        logger.warning("cannot open the X display DISPLAY=%s, so rendering without X", environ["DISPLAY"])

    if egl_usable():
        logger.debug("rendering offscreen through EGL")
        return EGL_WINDOW
    if osmesa_usable():
        logger.warning("EGL is not usable here; rendering through OSMesa instead")
        return OSMESA_WINDOW

    logger.warning(
        "neither EGL nor OSMesa is usable, so rendering will fail: install %s "
        "(or %s for OSMesa), or set DISPLAY to an X server", EGL_PACKAGES, OSMESA_PACKAGE,
    )
    return EGL_WINDOW


def egl_usable(environ: MutableMapping[str, str] | None = None) -> bool:
    """Return whether an EGL display can be initialised, as VTK would open it.

    VTK opens the EGL device numbered ``VTK_DEFAULT_EGL_DEVICE_INDEX`` (0 by
    default) through ``EGL_EXT_platform_device`` when the driver offers it,
    and the default display otherwise. The probe does the same through
    ctypes and terminates the display again.
    """
    if environ is None:
        environ = os.environ
    try:
        library = ctypes.CDLL("libEGL.so.1")
    except OSError as error:
        logger.debug("libEGL.so.1 cannot be loaded: %s", error)
        return False

    library.eglGetProcAddress.restype = ctypes.c_void_p
    library.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    library.eglGetDisplay.restype = ctypes.c_void_p
    library.eglGetDisplay.argtypes = [ctypes.c_void_p]
    library.eglInitialize.restype = ctypes.c_uint
    library.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32),
                                      ctypes.POINTER(ctypes.c_int32)]
    library.eglTerminate.argtypes = [ctypes.c_void_p]

    device_index = int(environ.get(EGL_DEVICE_INDEX_VARIABLE, "0") or 0)
    display = _open_device_display(library, device_index)
    if display is None:
        display = library.eglGetDisplay(None)
    if not display:
        logger.debug("no EGL display is available")
        return False

    major, minor = ctypes.c_int32(), ctypes.c_int32()
    initialised = bool(library.eglInitialize(display, ctypes.byref(major), ctypes.byref(minor)))
    if initialised:
        logger.debug("EGL %d.%d initialised on device %d", major.value, minor.value, device_index)
        library.eglTerminate(display)
    return initialised


def osmesa_usable() -> bool:
    """Return whether a libOSMesa that VTK can load is installed."""
    for name in _OSMESA_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def x_display_usable(display: str) -> bool:
    """Return whether the X display named ``display`` can be opened.

    A ``DISPLAY`` left over from an ``ssh -X`` login often names a display
    that is gone by the time a batch job runs.
    """
    try:
        library = ctypes.CDLL("libX11.so.6")
    except OSError as error:
        logger.debug("libX11.so.6 cannot be loaded: %s", error)
        return False

    library.XOpenDisplay.restype = ctypes.c_void_p
    library.XOpenDisplay.argtypes = [ctypes.c_char_p]
    library.XCloseDisplay.argtypes = [ctypes.c_void_p]
    connection = library.XOpenDisplay(display.encode())
    if not connection:
        return False
    library.XCloseDisplay(connection)
    return True


def _open_device_display(library: ctypes.CDLL, device_index: int) -> int | None:
    query_address = library.eglGetProcAddress(b"eglQueryDevicesEXT")
    display_address = library.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    if not (query_address and display_address):
        return None

    query_devices = ctypes.CFUNCTYPE(
        ctypes.c_uint, ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int32),
    )(query_address)
    get_platform_display = ctypes.CFUNCTYPE(
        ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32),
    )(display_address)

    devices = (ctypes.c_void_p * _MAX_EGL_DEVICES)()
    count = ctypes.c_int32()
    if not query_devices(_MAX_EGL_DEVICES, devices, ctypes.byref(count)) or count.value == 0:
        return None
    if device_index >= count.value:
        logger.warning("EGL device %d requested but only %d found", device_index, count.value)
        return None
    return get_platform_display(_EGL_PLATFORM_DEVICE_EXT, devices[device_index], None) or None


def _cap_llvmpipe_threads(environ: MutableMapping[str, str], local_ranks: int) -> None:
    current = environ.get("LP_NUM_THREADS")
    if current and current != _OWN_SETTINGS.get("LP_NUM_THREADS"):
        logger.debug("keeping LP_NUM_THREADS=%s set by the user", current)
        return

    # NOTE: the affinity mask is the set of cores this process may use. When
    # the launcher binds each rank to its own cores, the mask is already this
    # rank's share and the division below leaves cores idle. Set
    # LP_NUM_THREADS in that case.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // local_ranks)
    environ["LP_NUM_THREADS"] = _OWN_SETTINGS["LP_NUM_THREADS"] = str(threads)
    logger.debug("LP_NUM_THREADS=%d for %d ranks on %d cores", threads, local_ranks, cores)


def _choose_egl_device(environ: MutableMapping[str, str], local_rank: int | None) -> None:
    chosen = environ.get(EGL_DEVICE_INDEX_VARIABLE)
    if chosen:
        _parse_count(EGL_DEVICE_INDEX_VARIABLE, chosen, minimum=0)
        return

    devices = environ.get(EGL_DEVICES_VARIABLE)
    if not devices or local_rank is None:
        return
    count = _parse_count(EGL_DEVICES_VARIABLE, devices, minimum=1)
    environ[EGL_DEVICE_INDEX_VARIABLE] = str(local_rank % count)
    logger.debug("local rank %d renders on EGL device %s", local_rank, environ[EGL_DEVICE_INDEX_VARIABLE])


def _parse_count(name: str, text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UserError(f"invalid {name}={text!r}: give a whole number of at least {minimum}")
    return value
