"""config.dtype='bfloat16' computes the activations in bfloat16 (parameters, BatchNorm statistics
and the loss stay float32; tests/test_train.py checks the saved state). Checked on the traced
program: every convolution and matrix product of the forward and backward pass (the autoencoder in
each `ops` form, the ResNet colorizers, and the train step built from a config) takes bfloat16
operands, and with 'float32' float32 ones; `assert_runs_in` names the two deliberate float32
exceptions. Tracing only (`jax.make_jaxpr`), nothing is compiled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxcolor import step as step_lib
from jaxcolor import trainer as trainer_lib
from jaxcolor.models import autoencoder, build_model

MATMULS = ("conv_general_dilated", "dot_general")


def _subjaxprs(value):
    if hasattr(value, "eqns"):  # a Jaxpr
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value, "consts"):  # a ClosedJaxpr
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _subjaxprs(v)


def matmul_eqns(jaxpr):
    """Every conv / dot equation of a jaxpr, inside jit, custom_vjp, scan, cond... included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in MATMULS:
            yield eqn
        for param in eqn.params.values():
            for sub in _subjaxprs(param):
                yield from matmul_eqns(sub)


def operand_dtypes(closed_jaxpr):
    """[(primitive name, operand dtypes, operand shapes)] of every conv / dot of a program."""
    return [(eqn.primitive.name, tuple(str(v.aval.dtype) for v in eqn.invars),
             tuple(v.aval.shape for v in eqn.invars)) for eqn in matmul_eqns(closed_jaxpr.jaxpr)]


def _is_input_color_matrix(name, shapes):
    """The ResNet colorizers' `encoder_input` turns L into sRGB in float32 before the cast to the
    compute dtype: its only matmul is the (..., 3) @ (3, 3) XYZ -> RGB matrix."""
    return name == "dot_general" and shapes[1] == (3, 3) and shapes[0][-1] == 3


def assert_runs_in(found, dtype, min_count, input_color_matrix=False):
    """Every conv of `found` takes `dtype` operands. So does every dot, with one exception in
    bfloat16: the weight gradient of `im2col_conv` (it accumulates in float32, and the transpose
    of that hands its bfloat16-valued cotangent back as float32) pairs a float32 cotangent with
    the bfloat16 patches. No matmul may have float32 operands only, except, where
    `input_color_matrix`, the float32 input conversion of the ResNet colorizers."""
    assert len(found) >= min_count, (len(found), found)
    assert any(name == "conv_general_dilated" for name, _, _ in found)
    for name, dtypes, shapes in found:
        if input_color_matrix and _is_input_color_matrix(name, shapes):
            assert set(dtypes) == {"float32"}, (name, dtypes, shapes)
        elif dtype == "bfloat16" and name == "dot_general":
            assert "bfloat16" in dtypes and set(dtypes) <= {"bfloat16", "float32"}, found
        else:
            assert set(dtypes) == {dtype}, (name, dtypes, shapes, found)


def forward(model, size=16):
    x = jnp.zeros((2, size, size, 1), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
    return x, variables


def forward_and_backward(model, size=16):
    """The jaxprs of a training forward pass (batch statistics) and of its gradient."""
    x, variables = forward(model, size)

    def loss(params, batch_stats):
        out, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             mutable=["batch_stats"])
        assert out.dtype == jnp.float32  # the loss sees float32
        return jnp.mean(out**2)

    args = (variables["params"], variables["batch_stats"])
    return jax.make_jaxpr(loss)(*args), jax.make_jaxpr(jax.grad(loss))(*args)


@pytest.mark.parametrize("ops", list(autoencoder.OPS))
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_autoencoder_convolutions_run_in_the_configured_dtype(ops, dtype):
    config = tiny_config(**{"model.ops": ops})
    model = build_model(config.model, dtype)
    fwd, grad = forward_and_backward(model, config.data.image_size)
    fwd_found = operand_dtypes(fwd)
    assert all(set(dtypes) == {dtype} for _, dtypes, _ in fwd_found), fwd_found  # strictly
    assert_runs_in(fwd_found, dtype, 10)  # 10 conv layers (some as 2 or 4 convs)
    assert_runs_in(operand_dtypes(grad), dtype, 25)  # and their weight and input gradients


@pytest.mark.parametrize("name", ["resnet50_seed", "resnet50_unet"])
def test_resnet_colorizers_run_in_bfloat16(name):
    model = build_model(tiny_config(**{"model.name": name}).model, "bfloat16")
    fwd, grad = forward_and_backward(model, 32)
    assert_runs_in(operand_dtypes(fwd), "bfloat16", 11, input_color_matrix=True)
    assert_runs_in(operand_dtypes(grad), "bfloat16", 30, input_color_matrix=True)


def test_intermediate_activations_are_bfloat16():
    """Every layer's output is bfloat16 but the model's last, which is cast to float32."""
    model = build_model(tiny_config().model, "bfloat16")
    x = jnp.zeros((2, 16, 16, 1), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    out, state = jax.eval_shape(lambda v: model.apply(v, x, train=False,
                                                      capture_intermediates=True,
                                                      mutable=["intermediates"]), variables)
    captured = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    dtypes = {jax.tree_util.keystr(path): leaf.dtype for path, leaf in captured}
    top = [k for k in dtypes if k.startswith("['__call__']")]
    layers = {k: d for k, d in dtypes.items() if k not in top}
    assert out.dtype == jnp.float32 and [dtypes[k] for k in top] == [jnp.float32]
    assert len(layers) >= 10 and set(layers.values()) == {jnp.dtype("bfloat16")}, layers


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_train_step_from_the_config_runs_in_its_dtype(dtype):
    """The train step that `loop.train_and_evaluate` compiles for `config.dtype`, traced on the abstract state."""
    config = tiny_config(dtype=dtype)
    trainer = trainer_lib.Trainer(config)
    state = jax.eval_shape(trainer.init_fn, jax.random.key(0))
    size = config.data.image_size
    batch = {"L": jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32),
             "ab": jax.ShapeDtypeStruct((2, size, size, 2), jnp.float32)}
    step = lambda s, b: step_lib.train_step(s, b, None, loss_fn=trainer.loss_fn)  # noqa: E731
    assert_runs_in(operand_dtypes(jax.make_jaxpr(step)(state, batch)), dtype, 25)
    floats = {np.dtype(leaf.dtype) for leaf in jax.tree.leaves((state.params, state.batch_stats))}
    assert floats == {np.dtype("float32")}
