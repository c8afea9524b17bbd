"""shortgen: turn a written episode script into a finished vertical short video."""

__version__ = "0.1.0"
