"""Launch CASNet perception nodes: one casnet_node per camera, or one batched casnet_node for all of them.

One camera (outputs under /<namespace>/casnet/...)::

    ros2 launch casnet_ros casnet.launch.py checkpoint:=/path/model.pt camera_topic:=/camera/image_raw

Several cameras from one launch, one node each (outputs under /<namespace>/<camera>/casnet/...)::

    ros2 launch casnet_ros casnet.launch.py checkpoint:=/path/model.pt \
        cameras:=front,rear=/sensing/rear/image_rect_color

A camera entry is ``name=topic``, or a bare ``name`` for the topic ``/name/image_raw``. The
``image/compressed`` topic beside each image topic is remapped too (used with
``subscribe_compressed: true``). All other parameters come from ``params_file`` (default: the
package's config/casnet.yaml).

The same cameras from one process, one model, their frames run as one batch (same topics out)::

    ros2 launch casnet_ros casnet.launch.py checkpoint:=/path/model.pt batched:=true \
        cameras:=front,rear=/sensing/rear/image_rect_color

The batched node gets the parameters ``cameras: [front, rear]`` and ``<name>.image_topic``; its outputs
are under /<namespace>/<camera>/casnet/... as with one node per camera (see casnet_ros/node.py).

Transport: each node process gets the package's Fast DDS profile (config/fastdds_shm.xml: a 64 MB
shared-memory segment beside UDPv4, so full-resolution images are not lost) through
FASTDDS_DEFAULT_PROFILES_FILE / FASTRTPS_DEFAULT_PROFILES_FILE, unless the environment of the launch
already names a profile or selects another RMW (see casnet_ros.transport). The camera driver needs
the same profile for best-effort full-resolution images: export those variables before starting it.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from casnet_ros.transport import large_image_environment

PACKAGE = "casnet_ros"


def _cameras(cameras_argument, camera_topic):
    """[(name, image topic)] from the ``cameras`` argument, or the single ``camera_topic``."""
    entries = [entry.strip() for entry in cameras_argument.split(",") if entry.strip()]
    if not entries:
        return [("", camera_topic)]
    cameras = []
    for entry in entries:
        name, _, topic = entry.partition("=")
        name = name.strip().strip("/")
        cameras.append((name, topic.strip() or f"/{name}/image_raw"))
    return cameras


def _nodes(context):
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    overrides = {}
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    if checkpoint:
        overrides["checkpoint"] = checkpoint
    device = LaunchConfiguration("device").perform(context)
    if device:
        overrides["device"] = device
    parameters = [LaunchConfiguration("params_file").perform(context)]
    if overrides:
        parameters.append(overrides)
    environment = large_image_environment(os.environ)  # {} when the user chose a profile or another RMW
    cameras = _cameras(LaunchConfiguration("cameras").perform(context),
                       LaunchConfiguration("camera_topic").perform(context))
    batched = LaunchConfiguration("batched").perform(context).strip().lower() in ("true", "1", "yes")
    if batched and cameras[0][0]:
        # One process: each camera's topic as a parameter instead of a remapping.
        processes = [(namespace, [*parameters, _batched_parameters(cameras)], [])]
    else:
        processes = [("/".join(part for part in (namespace, camera) if part), parameters,
                      [("~/image", topic), ("~/image/compressed", topic.rstrip("/") + "/compressed")])
                     for camera, topic in cameras]
    return [Node(
        package=PACKAGE,
        executable="casnet_node",
        name="casnet",
        namespace="/" + node_namespace,
        parameters=node_parameters,
        remappings=remappings,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level").perform(context)],
        additional_env=environment,
        output="screen",
        emulate_tty=True,
    ) for node_namespace, node_parameters, remappings in processes]


def _batched_parameters(cameras):
    """The parameters of one batched node serving ``cameras`` ([(name, topic)])."""
    parameters = {"cameras": [name for name, _ in cameras]}
    parameters.update({f"{name}.image_topic": topic for name, topic in cameras})
    return parameters


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "casnet.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image topic of the camera (when 'cameras' is empty)"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="Comma-separated cameras, one node each: name=topic or name "
                                          "(topic /name/image_raw); empty: one node on camera_topic"),
        DeclareLaunchArgument("batched", default_value="false",
                              description="true: one casnet_node process serves all 'cameras' as one batch "
                                          "(same output topics); false: one process per camera"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node(s)"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameter file of casnet_node"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="CASNet checkpoint file (overrides the parameter file when set)"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N (overrides the parameter file when set)"),
        DeclareLaunchArgument("log_level", default_value="info", description="Log level of the node(s)"),
        OpaqueFunction(function=_nodes),
    ])
