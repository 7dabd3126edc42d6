"""The zero-setup default (what `python -m jaxcolor.train` runs with no flags)."""

from jaxcolor.configs.default import get_config  # noqa: F401
