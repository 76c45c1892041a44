"""The shape of ``casnet_core`` read from its source: no module imports itself through a cycle, and the
library never imports ROS (``casnet_ros`` is the only place for rclpy and messages)."""

from __future__ import annotations

import ast
from pathlib import Path

import casnet_core

PACKAGE_DIR = Path(casnet_core.__file__).resolve().parent
# Top-level names of ROS 2 Python packages; ``rosbags`` (pure Python, no ROS install) is allowed.
ROS_PACKAGES = {"rclpy", "rosidl_runtime_py", "rosidl_parser", "rosbag2_py", "ament_index_python", "launch",
                "launch_ros", "cv_bridge", "message_filters", "tf2_ros", "builtin_interfaces", "casnet_ros"}


def _is_ros_package(top_level: str) -> bool:
    return top_level in ROS_PACKAGES or top_level.endswith(("_msgs", "_srvs", "_interfaces"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of casnet_core that ``name`` imports anywhere in its file, top-level names of every import).

    Imports inside functions count: they still close a cycle, only later. So do imports under
    ``if TYPE_CHECKING:``: they never run, but a cycle of annotations is still two modules that each need the
    other (the design rule is one-way dependencies, not "no cycle at run time").
    """
    is_package = path.name == "__init__.py"
    internal, top_levels = set(), set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule pkg.sub; ``from mod import name`` imports mod.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            top_levels.add(target.split(".")[0])
            if target in known and target != name:
                internal.add(target)
    return internal, top_levels


def _import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    graph, top_levels = {}, {}
    for name, path in modules.items():
        graph[name], top_levels[name] = _imports(name, path, set(modules))
    return graph, top_levels


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_module_of_casnet_core_imports_itself_through_a_cycle():
    graph, _ = _import_graph()
    assert "casnet_core.evaluation" in graph and "casnet_core.predictor" in graph
    # The check itself sees a cycle when there is one.
    assert _find_cycle({**graph, "casnet_core.formats": graph["casnet_core.formats"] | {"casnet_core.evaluation"}})
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    # The seam of issue 10: evaluation uses the predictor, never the reverse; evaluation and `casnet predict` share
    # the file formats.
    evaluation_imports = set().union(*(v for k, v in graph.items() if k.startswith("casnet_core.evaluation")))
    assert "casnet_core.predictor" in evaluation_imports
    assert not any(m.startswith("casnet_core.evaluation") for m in graph["casnet_core.predictor"])
    assert "casnet_core.formats" in graph["casnet_core.predict_command"]


def test_casnet_core_never_imports_ros():
    _, top_levels = _import_graph()
    assert _is_ros_package("rclpy") and _is_ros_package("vision_msgs") and not _is_ros_package("rosbags")
    offending = {module: sorted(t for t in names if _is_ros_package(t)) for module, names in top_levels.items()}
    offending = {module: names for module, names in offending.items() if names}
    assert not offending, f"casnet_core imports ROS packages: {offending}"


def test_annotation_and_function_imports_count_in_the_cycle_graph(tmp_path):
    # An import under TYPE_CHECKING (for annotations) is a dependency like any other: the training rooms once
    # named loop.TrainingRun that way while loop imported them. Imports inside functions count too.
    source = tmp_path / "mod.py"
    known = {"pkg.a", "pkg.b", "pkg.c", "pkg.mod"}
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n    import rclpy\n"
                      "from pkg import b\ndef f():\n    from pkg import c\n")
    internal, top_levels = _imports("pkg.mod", source, known)
    assert internal == {"pkg.a", "pkg.b", "pkg.c"}
    assert "rclpy" in top_levels  # a type-only import of ROS is still an import of ROS for the library


def test_the_training_rooms_depend_one_way():
    # The run's state (training.run) is below the rooms that read it; the loop is above them all.
    graph, _ = _import_graph()
    rooms = {f"casnet_core.training.{name}" for name in ("loop", "checkpointing", "schedule", "validation")}
    assert not graph["casnet_core.training.run"] & rooms
    for room in rooms - {"casnet_core.training.loop"}:
        assert "casnet_core.training.run" in graph[room] and "casnet_core.training.loop" not in graph[room]
    assert rooms - {"casnet_core.training.loop"} <= graph["casnet_core.training.loop"]
