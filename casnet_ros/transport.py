"""The DDS transport set-up for full-resolution images: where the shipped profiles are, and the
environment that selects them. Plain Python (no rclpy): it must run before the first DDS participant.

``config/fastdds_shm.xml`` gives Fast DDS a 64 MB shared-memory segment beside UDPv4 (see the
file's comment for why); ``config/cyclonedds.xml`` is the Cyclone DDS equivalent. Fast DDS reads
its profile file when a process creates its first participant, so the variables must be in the
environment before ``rclpy.init`` / the first node: ``casnet_node`` (``main``) applies them to
itself, ``launch/casnet.launch.py`` passes them to the node process, and the tests, benchmarks and
the live replay call ``use_large_image_profile()`` for their own publishers and subscribers.

A profile the user already chose (``FASTDDS_DEFAULT_PROFILES_FILE`` or
``FASTRTPS_DEFAULT_PROFILES_FILE`` set, even to another file) always wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, MutableMapping

try:  # a ROS install (colcon / ament) indexes the package's share folder; a pip install has no ament index
    from ament_index_python.packages import get_package_share_directory
except ImportError:
    get_package_share_directory = None

PACKAGE = "casnet_ros"
FASTDDS_PROFILE = "fastdds_shm.xml"
# Fast DDS 3 (Kilted and later) reads the first name; Fast DDS 2 (Humble, Jazzy) the second. Fast DDS 3
# still reads the old one too, but warns that it is deprecated on every participant.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
_FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
_FAST_DDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def config_path(name: str) -> Path:
    """A file of the package's config/ folder: the installed share directory (colcon / ament), else
    the source tree this module was imported from (pip install -e, a checkout)."""
    if get_package_share_directory is not None:
        try:
            installed = Path(get_package_share_directory(PACKAGE)) / "config" / name
            if installed.is_file():
                return installed
        except (LookupError, OSError):  # no AMENT_PREFIX_PATH, package not in it
            pass
    return Path(__file__).resolve().parents[1] / "config" / name


def fastdds_profile_path() -> Path:
    """config/fastdds_shm.xml (FileNotFoundError when this installation lacks it)."""
    path = config_path(FASTDDS_PROFILE)
    if not path.is_file():
        raise FileNotFoundError(f"the Fast DDS profile {FASTDDS_PROFILE} is not installed (looked at {path})")
    return path


def large_image_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables to add to ``environ`` so that a process's Fast DDS uses the shipped profile; empty
    when ``environ`` already names a profile or selects another RMW than Fast DDS."""
    if environ.get("RMW_IMPLEMENTATION", "") not in _FAST_DDS_RMWS:
        return {}
    if any(variable in environ for variable in PROFILE_VARIABLES):
        return {}
    profile = str(fastdds_profile_path())
    # ROS_DISTRO is set by every sourced ROS 2 install; the PyPI wheels (Kilted) leave it unset.
    fast_dds_2 = environ.get("ROS_DISTRO", "").lower() in _FAST_DDS_2_DISTROS
    return {PROFILE_VARIABLES[1] if fast_dds_2 else PROFILE_VARIABLES[0]: profile}


def use_large_image_profile(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Adds ``large_image_environment()`` to ``environ`` (this process by default; call it before the
    first rclpy node); returns what it added."""
    added = large_image_environment(environ)
    environ.update(added)
    return added
