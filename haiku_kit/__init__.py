"""haiku-kit: teach a small instruction model to write English haiku."""
__version__ = "0.1.0"
