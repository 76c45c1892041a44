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

Autoware (casnet_ros/autoware.py): ``autoware:=true`` gives camera i (its place in ``cameras``; one camera,
camera0, when ``cameras`` is empty) the topics of Autoware's camera detector, ``autoware_tensorrt_yolox``::

    ros2 launch casnet_ros casnet.launch.py autoware:=true cameras:=camera0,camera1 [batched:=true]

input ``/sensing/camera/camera<i>/image_rect_color`` (unless the entry names a topic), outputs ~/rois, ~/mask and
~/instance_mask remapped to ``/perception/object_recognition/detection/{rois,mask,instance_mask}<i>``; the
parameters come from config/casnet_autoware.yaml unless ``params_file`` names another file.

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
AUTOWARE_DETECTION = "/perception/object_recognition/detection"
# Node output -> Autoware topic (+ camera index).
AUTOWARE_TOPICS = (("rois", "rois"), ("mask", "mask"), ("instance_mask", "instance_mask"))


def _cameras(cameras_argument, camera_topic, autoware=False):
    """[(name, image topic)] from the ``cameras`` argument, or the single ``camera_topic`` (Autoware: camera0)."""
    entries = [entry.strip() for entry in cameras_argument.split(",") if entry.strip()]
    if not entries:
        return [("camera0", _autoware_image_topic(0))] if autoware else [("", camera_topic)]
    cameras = []
    for index, entry in enumerate(entries):
        name, _, topic = entry.partition("=")
        name = name.strip().strip("/")
        cameras.append((name, topic.strip() or (_autoware_image_topic(index) if autoware else f"/{name}/image_raw")))
    return cameras


def _autoware_image_topic(index):
    return f"/sensing/camera/camera{index}/image_rect_color"


def _autoware_remappings(prefix, index):
    """The remappings of one camera's Autoware outputs (``prefix``: of its output topics) to camera ``index``'s."""
    return [(prefix + output, f"{AUTOWARE_DETECTION}/{topic}{index}") for output, topic in AUTOWARE_TOPICS]


def _processes(namespace, parameters, cameras, batched, autoware):
    """[(node namespace, parameters, remappings)], one per casnet_node process (launch-free: tests run it)."""
    if batched and cameras[0][0]:
        # One process: each camera's topic as a parameter instead of a remapping.
        remappings = [remapping for index, (camera, _) in enumerate(cameras) if autoware
                      for remapping in _autoware_remappings(f"{camera}/casnet/", index)]
        return [(namespace, [*parameters, _batched_parameters(cameras)], remappings)]
    return [("/".join(part for part in (namespace, camera) if part), parameters,
             [("~/image", topic), ("~/image/compressed", topic.rstrip("/") + "/compressed"),
              *(_autoware_remappings("~/", index) if autoware else [])])
            for index, (camera, topic) in enumerate(cameras)]


def _nodes(context):
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    overrides = {}
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    if checkpoint:
        overrides["checkpoint"] = checkpoint
    device = LaunchConfiguration("device").perform(context)
    if device:
        overrides["device"] = device
    autoware = _is_true(LaunchConfiguration("autoware").perform(context))
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(
        get_package_share_directory(PACKAGE), "config", "casnet_autoware.yaml" if autoware else "casnet.yaml")
    parameters = [params_file]
    if overrides:
        parameters.append(overrides)
    environment = large_image_environment(os.environ)  # {} when the user chose a profile or another RMW
    cameras = _cameras(LaunchConfiguration("cameras").perform(context),
                       LaunchConfiguration("camera_topic").perform(context), autoware)
    batched = _is_true(LaunchConfiguration("batched").perform(context))
    processes = _processes(namespace, parameters, cameras, batched, autoware)
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


def _is_true(value):
    return value.strip().lower() in ("true", "1", "yes")


def _batched_parameters(cameras):
    """The parameters of one batched node serving ``cameras`` ([(name, topic)])."""
    parameters = {"cameras": [name for name, _ in cameras]}
    parameters.update({f"{name}.image_topic": topic for name, topic in cameras})
    return parameters


def generate_launch_description():
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
        DeclareLaunchArgument("params_file", default_value="",
                              description="YAML parameter file of casnet_node (empty: the package's "
                                          "config/casnet.yaml, config/casnet_autoware.yaml with autoware:=true)"),
        DeclareLaunchArgument("autoware", default_value="false",
                              description="true: Autoware's camera topics (input /sensing/camera/camera<i>/"
                                          "image_rect_color, outputs /perception/object_recognition/detection/"
                                          "{rois,mask,instance_mask}<i>) for camera i of 'cameras'"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="CASNet checkpoint file (overrides the parameter file when set)"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N (overrides the parameter file when set)"),
        DeclareLaunchArgument("log_level", default_value="info", description="Log level of the node(s)"),
        OpaqueFunction(function=_nodes),
    ])
