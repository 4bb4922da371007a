"""rolekit: design, rehearse and test full-duplex voice personas on PersonaPlex 7B in MLX."""

__version__ = "0.1.0"
