"""Extension points: hook specs, the plugin manager, entry-point loading."""

from ._manager import DEFAULT_PLUGINS, PluginHost, build_plugin_host
from .hookspecs import hookimpl

__all__ = ["DEFAULT_PLUGINS", "PluginHost", "build_plugin_host", "hookimpl"]
