"""Packaging for tfprune."""

import re
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent
_VERSION = re.search(
    r'__version__ = "([^"]+)"', (_HERE / "tfprune" / "version.py").read_text()
).group(1)

setup(
    name="tfprune",
    version=_VERSION,
    description="Pruning neural networks at initialization with TensorFlow and Keras 3",
    long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tfprune", "tfprune.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        "tensorflow-datasets",
        "tensorboard",
        "importlib_resources",
        "gin-config",
        "absl-py",
        "numpy",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "ruff"],
        "plot": ["matplotlib"],
        "tfmot": ["tensorflow-model-optimization", "tf_keras"],
    },
    license="Apache-2.0",
)
