"""jaxcolor: automatic image colorization in JAX/Flax."""

__version__ = "0.1.0"
