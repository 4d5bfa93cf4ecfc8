"""Data-parallel training on 8 virtual CPU devices equals single-device training.

XLA_FLAGS must be set before jax is imported, so the 8-device run is a fresh Python subprocess
(as in tests/test_sharding.py); it prints JSON that the tests below assert on.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("training_sharded")  # one worker runs the fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import json, os, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxrej.models.mlp import ConditionalMLP
    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.sde import VPSDE
    from jaxrej.training.loop import (TrainOptions, data_mesh, init_train_state,
        make_batch_train_step, make_train_step, optimizer_from_options, replicate, train,
        batch_indices)

    net = ConditionalMLP(num_classes=3, hidden=32, n_blocks=2, emb_dim=16, conditioning="film")
    sde, event = VPSDE(), (4, 4, 1)
    score_fn = make_score_fn(net, sde)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96).astype(np.int32)
    x = np.clip(rng.integers(0, 6, (96, *event)) + 5 * y[:, None, None, None], 0, 15).astype(np.uint8)
    opts = TrainOptions(n_iters=4, batch_size=16, lr=1e-2, warmup=2, ema_decay=0.9, log_every=1,
                        eval_every=4, checkpoint_every=2, weighting="likelihood",
                        importance_sampling=True, label_gap_rows=8)
    p0 = init_params(net, event, key=jax.random.key(1))
    key = jax.random.key(2)
    leaves = lambda t: [np.asarray(a, np.float64).ravel().tolist()
                        for a in jax.tree_util.tree_leaves(t)]
    out = {"n_devices": len(jax.devices())}

    # 1. the jitted step, 5 steps each way from the same state
    mesh = data_mesh(opts)
    out["mesh_size"] = int(mesh.size)
    def run(mesh):
        state = init_train_state(p0, optimizer_from_options(opts))
        step = make_train_step(score_fn, sde, opts, n_levels=16, mesh=mesh)
        imgs, labs = replicate(jnp.asarray(x), mesh), replicate(jnp.asarray(y), mesh)
        state = replicate(state, mesh)
        losses = []
        for _ in range(5):
            state, m = step(state, imgs, labs, key)
            losses.append(float(m["loss"]))
        return state, losses, step
    ref, ref_losses, _ = run(None)
    sh, sh_losses, sh_step = run(mesh)
    out["ref"] = {"params": leaves(ref.params), "ema": leaves(ref.ema_params),
                  "opt": leaves(ref.opt_state), "loss": ref_losses}
    out["sharded"] = {"params": leaves(sh.params), "ema": leaves(sh.ema_params),
                      "opt": leaves(sh.opt_state), "loss": sh_losses}
    out["init"] = leaves(p0)
    leaf = jax.tree_util.tree_leaves(sh.params)[0]
    out["params_replicated"] = bool(leaf.sharding.is_fully_replicated)
    out["params_devices"] = len(leaf.sharding.device_set)
    # the compiled step really splits the batch: XLA inserted a cross-device reduction
    st = replicate(init_train_state(p0, optimizer_from_options(opts)), mesh)
    hlo = sh_step.lower(st, replicate(jnp.asarray(x), mesh), replicate(jnp.asarray(y), mesh),
                        key).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo

    # 2. the multi-host recipe's building block on one process: a global batch made from
    # process-local rows, fed to make_batch_train_step, equals make_train_step's step
    s0 = init_train_state(p0, optimizer_from_options(opts))
    data_key, step_key = jax.random.split(key)
    idx = np.asarray(batch_indices(jnp.int32(0), 96, 16, key=data_key))
    bs = NamedSharding(mesh, P("batch"))
    gx = jax.make_array_from_process_local_data(bs, x[idx])
    gy = jax.make_array_from_process_local_data(bs, y[idx])
    bstep = make_batch_train_step(score_fn, sde, opts, n_levels=16, mesh=mesh)
    b1, _ = bstep(replicate(s0, mesh), gx, gy, jax.random.fold_in(step_key, 0))
    r1, _ = make_train_step(score_fn, sde, opts, n_levels=16)(
        init_train_state(p0, optimizer_from_options(opts)), jnp.asarray(x), jnp.asarray(y), key)
    out["batch_step"] = leaves(b1.params)
    out["gather_step"] = leaves(r1.params)

    # 3. train(): the default path is data-parallel; killed after step 3 and resumed (from the
    # step-2 checkpoint) it ends where data_parallel=False ends
    class Killed(Exception):
        pass
    def die(state):
        if int(state.step) == 3:
            raise Killed
    kw = dict(score_fn=score_fn, sde=sde, init_params=p0, images=x, labels=y, n_levels=16,
              key=jax.random.key(3), eval_images=x[:16], eval_labels=y[:16], progress=False)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        try:
            train(workdir=a, opts=opts, on_step=die, **kw)
        except Killed:
            pass
        dp, s_dp = train(workdir=a, opts=opts, **kw)
        one, s_one = train(workdir=b, opts=TrainOptions(**{**opts.__dict__, "data_parallel": False}), **kw)
        rows = lambda d: [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
        out["train"] = {"dp": leaves(dp.params), "one": leaves(one.params),
                        "dp_devices": s_dp["data_parallel_devices"],
                        "one_devices": s_one["data_parallel_devices"], "start": s_dp["start_step"],
                        "dp_rows": rows(a), "one_rows": rows(b)}
    # 4. a batch that does not divide over the devices
    try:
        data_mesh(TrainOptions(batch_size=12))
        out["indivisible"] = None
    except ValueError as e:
        out["indivisible"] = str(e)
    out["single_device_mesh"] = data_mesh(opts, devices=jax.devices()[:1]) is None
    out["off"] = data_mesh(TrainOptions(batch_size=12, data_parallel=False)) is None
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def _close(a, b, rtol=1e-4, atol=2e-5):
    """Equal up to float rounding: the sums over devices run in another order, and Adam divides
    each update by the gradient's own scale, so a component near zero moves by ~1e-6 abs."""
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def test_eight_devices_and_a_mesh_over_all(eight):
    assert eight["n_devices"] == 8 and eight["mesh_size"] == 8


def test_sharded_steps_equal_single_device_steps(eight):
    ref, sh = eight["ref"], eight["sharded"]
    np.testing.assert_allclose(sh["loss"], ref["loss"], rtol=1e-5)
    _close(sh["params"], ref["params"])
    _close(sh["ema"], ref["ema"])
    _close(sh["opt"], ref["opt"])
    # not vacuous: five steps moved the params (the output layer starts at zero)
    assert np.abs(np.asarray(ref["params"][-1]) - np.asarray(eight["init"][-1])).max() > 1e-3


def test_sharded_state_is_replicated_and_the_batch_is_split(eight):
    assert eight["params_replicated"] and eight["params_devices"] == 8
    assert eight["all_reduce"]


def test_global_batch_from_process_local_rows(eight):
    _close(eight["batch_step"], eight["gather_step"])


def test_train_defaults_to_data_parallel_and_resumes(eight):
    t = eight["train"]
    assert t["dp_devices"] == 8 and t["one_devices"] == 1 and t["start"] == 2
    _close(t["dp"], t["one"])
    assert [r["step"] for r in t["dp_rows"]] == [r["step"] for r in t["one_rows"]]
    last_dp, last_one = t["dp_rows"][-1], t["one_rows"][-1]
    for k in ("loss", "eval_loss_ema", "label_gap_nats", "label_acc"):
        np.testing.assert_allclose(last_dp[k], last_one[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_batch_size_must_divide_over_devices(eight):
    msg = eight["indivisible"]
    assert msg is not None and "training.batch_size" in msg and "8 devices" in msg
    assert "data_parallel" in msg
    assert eight["single_device_mesh"] and eight["off"]
