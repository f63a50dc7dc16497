# componentize-py finds the exported resource `instance` of the interface
# `resource-type` as the class `Instance` of the top-level module
# `resource_type`; the implementation lives with the rest of the plugin.
from python_marker import Instance

__all__ = ["Instance"]
