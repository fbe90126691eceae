"""dockship: bake package versions from an index into images and roll them out."""

__version__ = "0.1.0"
