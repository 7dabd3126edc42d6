"""jaxcolor: automatic image colorization in JAX/Flax."""

__version__ = "0.1.0"

# Imported on first use: `import jaxcolor` stays free of JAX until something needs it.
_LAZY = {
    "colorize_array": ("jaxcolor.colorize", "colorize_array"),
    "load_colorizer": ("jaxcolor.runs", "load_colorizer"),
    "Colorizer": ("jaxcolor.runs", "Colorizer"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxcolor' has no attribute {name!r}")
