"""casnet_core (pure PyTorch library, CLI `casnet`) and casnet_ros (the ROS 2 node), one distribution.

On a ROS 2 install this is the ament_python package `casnet_ros` (colcon build); elsewhere
`pip install -e .` gives the library and the CLI. The interface packages live in msg/.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "casnet_ros"
# The Autoware message packages the node publishes (msg/, subsets of Autoware release 1.8.0's).
AUTOWARE_INTERFACE_PACKAGES = ("autoware_perception_msgs", "tier4_perception_msgs", "autoware_internal_perception_msgs")

setup(
    name=PACKAGE,
    version="0.1.0",
    description="CASNet instance and panoptic segmentation: PyTorch library and ROS 2 perception node",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["casnet_core", "casnet_core.*", "casnet_ros", "casnet_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", ["config/casnet.yaml", "config/casnet_autoware.yaml", "config/fastdds_shm.xml",
                                          "config/cyclonedds.xml"]),
        # Interface definitions, for `casnet replay` to write the node's messages into bags without ROS
        # (under this package's share: a ROS install's own casnet_msgs / vision_msgs stay untouched).
        ("share/" + PACKAGE + "/interfaces/casnet_msgs/msg", glob("msg/casnet_msgs/msg/*.msg")),
        ("share/" + PACKAGE + "/interfaces/vision_msgs/msg", glob("msg/vision_msgs/msg/*.msg")),
        *[("share/" + PACKAGE + f"/interfaces/{package}/msg", glob(f"msg/{package}/msg/*.msg"))
          for package in AUTOWARE_INTERFACE_PACKAGES],
    ],
    # The default model travels with the library (casnet_core.default_model_path()).
    package_data={"casnet_core": ["models/*.pt"]},
    install_requires=["numpy", "torch", "torchvision", "timm", "opencv-python-headless",
                      "cityscapesscripts", "pyyaml", "tqdm", "scipy", "rosbags", "onnx", "onnxruntime"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "casnet = casnet_core.cli:main",
            "casnet_node = casnet_ros.node:main",
        ],
    },
)
