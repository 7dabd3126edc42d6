import functools, json, sys, jax, jax.numpy as jnp, ml_collections
from jaxcolor import losses, step
from jaxcolor.models import build_model
from jaxcolor.models import colorizers
for name, dt, B in [("autoencoder","bfloat16",1024),("autoencoder","float32",512),("autoencoder","float32",256),("resnet50_seed","float32",256),("resnet50_unet","float32",256)]:
    if name=="autoencoder": model=build_model(ml_collections.ConfigDict({"name":"autoencoder","width":1.0}),dtype=dt)
    else: model={"resnet50_seed":colorizers.ResNet50Seed,"resnet50_unet":colorizers.ResNet50UNet}[name](dtype=jnp.dtype(dt))
    opt=ml_collections.ConfigDict(dict(name="adam",learning_rate=1e-3,schedule="constant",warmup_steps=0,b1=0.9,b2=0.999,weight_decay=0.0,grad_clip=0.0))
    tx,_=step.make_optimizer(opt,1)
    def init(r):
        v=model.init(r,jnp.zeros((1,128,128,1)),train=False)
        return step.TrainState.create(apply_fn=model.apply,params=v["params"],batch_stats=v.get("batch_stats",{}),tx=tx)
    st=jax.eval_shape(init,jax.random.key(0))
    batch={"L":jax.ShapeDtypeStruct((B,128,128,1),jnp.float32),"ab":jax.ShapeDtypeStruct((B,128,128,2),jnp.float32)}
    c=jax.jit(functools.partial(step.train_step,loss_fn=losses.reference_loss),donate_argnums=0).lower(st,batch,jax.random.key(1)).compile()
    m=c.memory_analysis()
    print(json.dumps({"model":name,"dtype":dt,"batch":B,"temp_GB":m.temp_size_in_bytes/1e9,"args_GB":m.argument_size_in_bytes/1e9,"out_GB":m.output_size_in_bytes/1e9}),flush=True)
