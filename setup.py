"""Packaging for tfprune: what pyproject.toml cannot say.

The metadata, dependencies and console scripts are in pyproject.toml. Here: the wheel carries
the repository's top-level `gin_configs/` as `tfprune/gin_configs/` (the one copy of the configs
stays where it is), which takes a package list computed from the directory tree.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONFIGS = "tfprune.gin_configs"
# gin_configs/ and each of its subdirectories, as packages of data files under tfprune/.
_CONFIG_PACKAGES = [
    CONFIGS,
    *(f"{CONFIGS}.{name}" for name in find_namespace_packages(where="gin_configs")),
]

setup(
    packages=[*find_packages(include=["tfprune", "tfprune.*"]), *_CONFIG_PACKAGES],
    package_dir={CONFIGS: "gin_configs"},
    package_data={name: ["*.gin"] for name in _CONFIG_PACKAGES},
)
