"""`python-marker`: the `file-marker` resource type written in Python.

A resource whose whole state is a marker file holding the resource's name.
Online writes it, offline removes it, the probes read it. The file lives in a
directory the resource's grant preopens (the `filesystem` capability).

componentize-py looks up the world's exports by name: the interface
`resource-type`'s free functions on the class `ResourceType` of this (the
app) module, and its resource `instance` as the class `Instance` of a
top-level module named after the interface, `resource_type` (see
resource_type.py, which re-exports the class defined here).
"""

import os
from typing import List, Self, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import resource_type
from wit_world.imports import types
from wit_world.imports.types import (
    CallContext,
    Capability,
    CheckLevel,
    ClusterEvent,
    Health,
    Problem,
    PropertyKind,
    PropertySpec,
    Timing,
    TypeInfo,
)

NAME = "python-marker"
VERSION = "0.1.0"


def path_problems(properties: List[Tuple[str, str]]) -> List[Problem]:
    """The problems with `path`, empty when it is usable."""
    path = dict(properties).get("path")
    if path is None:
        return [Problem("path", "`path` is required: set it to a file in a granted directory, such as /state/web.online")]
    # Preopened directories are named by absolute guest paths.
    if path.startswith("/") and not path.endswith("/"):
        return []
    return [Problem("path", f"`{path}` is not an absolute file path such as /state/web.online")]


def describe(problems: List[Problem]) -> str:
    return "; ".join(f"{p.property}: {p.message}" if p.property else p.message for p in problems)


class ResourceType(exports.ResourceType):
    def metadata(self) -> TypeInfo:
        return TypeInfo(
            name=NAME,
            version=VERSION,
            description="Keeps its state as a marker file (file-marker, written in Python).",
            properties=[
                PropertySpec(
                    name="path",
                    kind=PropertyKind.TEXT,
                    required=True,
                    default_value=None,
                    description="The marker file's path inside a granted directory.",
                )
            ],
            timing=Timing(0, 0, 0, 0),
            capabilities=[Capability.FILESYSTEM],
        )

    def validate(self, properties: List[Tuple[str, str]]) -> None:
        problems = path_problems(properties)
        if problems:
            raise Err(problems)


class Instance(resource_type.Instance):
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path

    @classmethod
    def open(cls, name: str, properties: List[Tuple[str, str]]) -> Self:
        problems = path_problems(properties)
        if problems:
            raise Err(types.Error_InvalidConfig(describe(problems)))
        return cls(name, dict(properties)["path"])

    def online(self, context: CallContext) -> None:
        try:
            with open(self.path, "w") as marker:
                marker.write(self.name)
        except OSError as error:
            message = f"cannot write {self.path}: {error}; is its directory granted to the resource?"
            raise Err(types.Error_Fatal(message))

    def offline(self, context: CallContext) -> None:
        try:
            self._remove()
        except OSError as error:
            raise Err(types.Error_Fatal(f"cannot remove {self.path}: {error}"))

    def terminate(self) -> None:
        # Best effort by contract; a failure shows in the next probe.
        try:
            self._remove()
        except OSError:
            pass

    def looks_alive(self) -> bool:
        return os.path.exists(self.path)

    def is_alive(self, level: CheckLevel) -> Health:
        try:
            with open(self.path) as marker:
                content = marker.read()
        except FileNotFoundError:
            return Health(False, f"{self.path} is missing")
        except OSError as error:
            return Health(False, f"{self.path} is unreadable: {error}")
        if content == self.name:
            return Health(True, f"{self.path} holds `{content}`")
        return Health(False, f"{self.path} holds `{content}`, expected `{self.name}`")

    def control(self, code: str, input: str) -> str:
        raise Err(types.Error_InvalidConfig(f"unknown control code `{code}`"))

    def notify(self, event: ClusterEvent) -> None:
        pass

    def _remove(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
