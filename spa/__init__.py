"""spa: Single Packet Authorization for Linux bastions."""

__version__ = "0.1.0"
