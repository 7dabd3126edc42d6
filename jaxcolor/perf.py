"""XLA:CPU performance flags for training on a CPU host, and helpers to apply them.

Nothing here is applied on import of `jaxcolor`: XLA reads `XLA_FLAGS` once, when the first
backend initializes, so a program that wants these flags calls `apply_cpu_flags()` before its
first JAX computation (the benchmarks do so by default; `--no_cpu_flags` turns it off). The flags
only affect the CPU backend; GPU and TPU compilations ignore them.

See benchmarks/RESULTS.md for the measurements behind each choice.
"""

from __future__ import annotations

import os

# Measured on a 2-core AMD EPYC (AVX-512) with jaxlib 0.10.2; see benchmarks/RESULTS.md.
# jaxlib 0.10 hands 'individual_convolution' to YNNPACK by default; its convolution weight
# gradients were up to 6x slower than XLA's Eigen convolutions at the autoencoder's 64x64 and
# 128x128 layers. Taking only convolutions away from YNNPACK (the '-' form keeps the rest of
# its default list) measured faster than both the default and turning YNNPACK off entirely.
RECOMMENDED_CPU_FLAGS: tuple[str, ...] = (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
)

# Distributions whose presence means JAX will run on an accelerator: the CPU flags are then not
# applied by default (another jaxlib may not know them, and XLA rejects unknown flags).
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def cpu_flags() -> str:
    """The recommended XLA:CPU flags as one `XLA_FLAGS` string."""
    return " ".join(RECOMMENDED_CPU_FLAGS)


def accelerator_expected() -> bool:
    """True when JAX_PLATFORMS names an accelerator, or (JAX_PLATFORMS unset) a GPU/TPU plugin
    is installed. Found without importing JAX."""
    import importlib.util

    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms:
        return platforms.split(",")[0].strip() not in ("cpu", "")
    return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def apply_cpu_flags(extra: str = "", force: bool = False) -> str:
    """Append the recommended CPU flags (and `extra`) to `XLA_FLAGS`, keeping flags already set.

    Must run before JAX initializes its backends; returns the resulting `XLA_FLAGS`. A flag the
    environment already sets (by name) is left as the environment has it. Where an accelerator
    is expected (`accelerator_expected()`) only `extra` is added, unless `force`.
    """
    current = os.environ.get("XLA_FLAGS", "").split()
    names = {f.split("=", 1)[0] for f in current}
    wanted = extra if (accelerator_expected() and not force) else cpu_flags() + " " + extra
    for flag in wanted.split():
        if flag.split("=", 1)[0] not in names:
            current.append(flag)
            names.add(flag.split("=", 1)[0])
    os.environ["XLA_FLAGS"] = " ".join(current)
    return os.environ["XLA_FLAGS"]
