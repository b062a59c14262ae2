"""ltcai (Lattice AI): a local daemon that turns a model name into a model that really chats."""

__version__ = "0.4.0.dev0"
__all__ = ["__version__"]
