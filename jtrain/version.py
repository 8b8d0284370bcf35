"""The version, in a module of its own so that modules below the package can name it without a cycle."""

__version__ = "0.1.0"
