from setuptools import find_packages, setup

setup(
    name="detr_d2",
    version="0.1.0",
    description="DETR (End-to-End Object Detection with Transformers) as a Detectron2 project",
    packages=find_packages(include=["detr_d2", "detr_d2.*"]),
    py_modules=["detr_d2_cli"],  # the command line of the entry points, importable without torch
    python_requires=">=3.8",
    # detectron2 itself is not on the package index: setup.sh builds it (dev/build_detectron2.py),
    # or use one built from source.
    install_requires=["torch", "torchvision", "scipy", "pycocotools", "fvcore", "hotcoco"],
)
