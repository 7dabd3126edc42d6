import os, sys, functools, time, glob, collections, json
sys.argv += []
import jax, jax.numpy as jnp, numpy as np, ml_collections
from jaxcolor import losses, step
from jaxcolor.models import build_model
B=int(os.environ.get("B","8")); S=128
model=build_model(ml_collections.ConfigDict({"name":"autoencoder","width":1.0}))
opt=ml_collections.ConfigDict(dict(name="adam",learning_rate=1e-3,schedule="constant",warmup_steps=0,b1=0.9,b2=0.999,weight_decay=0.0,grad_clip=0.0))
tx,_=step.make_optimizer(opt,1)
state=jax.jit(lambda r: step.create_state(model,tx,r,S))(jax.random.key(0))
rng=np.random.default_rng(0)
batch={"L":jnp.asarray(rng.uniform(0,1,(B,S,S,1)).astype(np.float32)),"ab":jnp.asarray(rng.uniform(-.5,.5,(B,S,S,2)).astype(np.float32))}
f=jax.jit(functools.partial(step.train_step,loss_fn=losses.reference_loss),donate_argnums=0)
k=jax.random.key(1)
state,m=f(state,batch,k); jax.block_until_ready(m)
d=os.environ.get("PDIR","/tmp/prof/trace")
jax.profiler.start_trace(d)
for _ in range(2):
    state,m=f(state,batch,k); jax.block_until_ready(m)
jax.profiler.stop_trace()
from jax.profiler import ProfileData
fn=sorted(glob.glob(d+"/**/*.xplane.pb",recursive=True))[-1]
pd=ProfileData.from_file(fn)
tot=collections.Counter(); cnt=collections.Counter()
for plane in pd.planes:
    for line in plane.lines:
        for ev in line.events:
            tot[(plane.name,line.name,ev.name)]+=ev.duration_ns; cnt[(plane.name,line.name,ev.name)]+=1
for (k_,v) in tot.most_common(45):
    print(f"{v/2e6:10.1f} ms  x{cnt[k_]//2:3d} {k_}")
