"""Packs the ROS 2 interface packages that scripts/build_interfaces.sh built into a venv as one wheel, so that a
machine without a compiler or the rosidl tool chain (the GPU machine) installs them with `pip install --no-index`.

    VENV/bin/python scripts/pack_interfaces.py VENV OUT_DIR

The files are those CMake installed (VENV/build-interfaces/<package>/install_manifest.txt): the Python packages
under site-packages go to the wheel's root, everything else under VENV (lib/*.so, share/...) to its data folder,
which pip installs under the target venv's prefix, where the ROS wheels' bootstrap finds the libraries. Prints
the wheel's path.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import sysconfig
import zipfile
from pathlib import Path

DISTRIBUTION = "casnet_ros_interfaces"
VERSION = "0.1.0"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def installed_files(venv: Path) -> list[Path]:
    """Every file the interface builds installed into ``venv`` (existing ones, each once)."""
    manifests = sorted((venv / "build-interfaces").glob("*/install_manifest.txt"))
    if not manifests:
        raise SystemExit(f"pack_interfaces: no install_manifest.txt under {venv}/build-interfaces: run make setup")
    files = {Path(line) for manifest in manifests for line in manifest.read_text().splitlines() if line}
    return sorted(path for path in files if path.is_file())


def pack(venv: Path, out_dir: Path) -> Path:
    venv = venv.resolve()
    site_packages = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["platlib"])
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheel_name = f"{DISTRIBUTION}-{VERSION}-{tag}-{tag}-linux_x86_64.whl"
    dist_info = f"{DISTRIBUTION}-{VERSION}.dist-info"
    data_dir = f"{DISTRIBUTION}-{VERSION}.data/data"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / wheel_name
    records = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        def add(name: str, data: bytes) -> None:
            wheel.writestr(name, data)
            records.append(_record_line(name, data))

        for file in installed_files(venv):
            if file.is_relative_to(site_packages):
                name = file.relative_to(site_packages).as_posix()
            elif file.is_relative_to(venv):
                name = f"{data_dir}/{file.relative_to(venv).as_posix()}"
            else:
                raise SystemExit(f"pack_interfaces: {file} is outside {venv}")
            add(name, file.read_bytes())
        add(f"{dist_info}/METADATA", (f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {VERSION}\n"
                                      "Summary: the interface packages of msg/ (scripts/gpu_carry.sh)\n"
                                      ).encode())
        add(f"{dist_info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: casnet pack_interfaces\nRoot-Is-Purelib: false\n"
                                   f"Tag: {tag}-{tag}-linux_x86_64\n").encode())
        records.append(f"{dist_info}/RECORD,,")
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: VENV/bin/python scripts/pack_interfaces.py VENV OUT_DIR", file=sys.stderr)
        return 2
    print(pack(Path(argv[0]), Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
