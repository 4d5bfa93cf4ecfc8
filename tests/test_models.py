"""Score networks: the score_fn contract, conditioning, embeddings, per-example independence."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrej.models.embeddings import GaussianFourierProjection, sinusoidal_embedding
from jaxrej.models.mlp import ConditionalMLP
from jaxrej.models.score import init_params, make_noise_fn, make_score_fn
from jaxrej.models.unet import ConditionalUNet
from jaxrej.sde import VESDE, VPSDE
from tests.conftest import CONFIGS


def _randomize(params, key, scale=0.2):
    """Non-zero params everywhere (the output layers are zero-initialised)."""

    @jax.jit
    def f(params, key):
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(key, len(leaves))
        new = [
            x + scale * jax.random.normal(k, x.shape, x.dtype)
            for x, k in zip(leaves, keys, strict=True)
        ]
        return jax.tree_util.tree_unflatten(tree, new)

    return f(params, key)


NETS = [
    (ConditionalMLP(num_classes=3, hidden=32, n_blocks=2, emb_dim=16, local=4), (8, 8, 1)),
    (
        ConditionalMLP(
            num_classes=3, hidden=32, n_blocks=1, emb_dim=16, time_embedding="sinusoidal"
        ),
        (5,),
    ),
    (
        ConditionalUNet(
            num_classes=3, nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)
        ),
        (8, 8, 3),
    ),
    (ConditionalMLP(num_classes=3, hidden=32, n_blocks=2, emb_dim=16, conditioning="film"), (5,)),
    (
        ConditionalUNet(
            num_classes=3,
            nf=4,
            ch_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(),
            conditioning="film",
        ),
        (8, 8, 1),
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "net,event", NETS, ids=["mlp-image-local", "mlp-vector", "unet-toy", "mlp-film", "unet-film"]
)
def test_score_fn_contract(net, event):
    sde = VPSDE()
    # random params of the right shapes (eval_shape: compiling a U-Net's init is slow on CPU)
    shapes = jax.eval_shape(lambda: init_params(net, event, key=jax.random.key(0)))
    params = _randomize(
        jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes), jax.random.key(1)
    )
    score_fn = make_score_fn(net, sde)
    eps_fn = make_noise_fn(net)
    x = jax.random.uniform(jax.random.key(2), (4, *event))
    t = jnp.array([0.01, 0.2, 0.5, 0.99])
    y = jnp.array([0, 1, 2, 1])

    # the probes as extra rows of ONE batched call (fewer network traces: compiling is slow here)
    x0 = jnp.zeros_like(x).at[0].set(x[0])
    xs = jnp.concatenate([x, x0, x[:1], x[:1]])  # rows 4-7: others zeroed; 8: label 1; 9: t 0.3
    ts = jnp.concatenate([t, t, t[:1], jnp.array([0.3])])
    ys = jnp.concatenate([y, y, jnp.array([1]), y[:1]])

    @jax.jit  # everything in one compiled call
    def outputs(params):
        return {
            "s0": score_fn(params, x[0], t[0], y[0]),  # ONE example
            "batched": jax.vmap(score_fn, in_axes=(None, 0, 0, 0))(params, xs, ts, ys),
            "eps": net.apply(params, xs, ts, ys),
            "eps1": eps_fn(params, x[1], t[1], y[1]),
            "tangent": jax.jvp(
                lambda z: score_fn(params, z, t[0], y[0]), (x[0],), (jnp.ones(event),)
            )[1],
        }

    o = jax.device_get(outputs(params))
    assert o["s0"].shape == event and o["s0"].dtype == np.float32
    # the noise parametrisation: score = -eps / std(t), eps from the batched network call
    std = np.asarray(sde.std(ts)).reshape(-1, *[1] * len(event))
    np.testing.assert_allclose(o["batched"], -o["eps"] / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(o["s0"], o["batched"][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(o["eps1"], o["eps"][1], rtol=1e-4, atol=1e-4)
    # per-example: row 0 does not depend on the other rows of the batch
    np.testing.assert_allclose(o["eps"][4], o["eps"][0], rtol=1e-4, atol=1e-4)
    # the label and the time both condition the output
    assert np.abs(o["eps"][8] - o["eps"][0]).max() > 1e-4
    assert np.abs(o["eps"][9] - o["eps"][0]).max() > 1e-4
    # differentiable in x (the likelihood needs Jacobian-vector products)
    assert np.all(np.isfinite(o["tangent"])) and np.abs(o["tangent"]).max() > 0


def test_zero_initialised_output_gives_zero_score():
    net = ConditionalMLP(num_classes=2, hidden=16, n_blocks=1, emb_dim=8)
    params = init_params(net, (4,), key=jax.random.key(0))
    s = make_score_fn(net, VESDE())(params, jnp.ones(4), 0.5, 1)
    np.testing.assert_array_equal(s, np.zeros(4))


def test_sinusoidal_embedding_reference():
    t = jnp.array([0.0, 0.25, 1.0])
    dim = 8
    got = np.asarray(sinusoidal_embedding(t, dim))
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))
    ref = np.concatenate(
        [np.sin(1000 * t[:, None] * freqs), np.cos(1000 * t[:, None] * freqs)], axis=1
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(t, 7)


def test_fourier_projection_is_fixed_and_matches_formula():
    mod = GaussianFourierProjection(dim=6, scale=3.0)
    t = jnp.array([0.1, 0.7])
    params = mod.init(jax.random.key(0), t)
    w = np.asarray(params["params"]["W"])
    ref = np.concatenate(
        [np.sin(2 * np.pi * t[:, None] * w), np.cos(2 * np.pi * t[:, None] * w)], axis=1
    )
    np.testing.assert_allclose(mod.apply(params, t), ref, rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda p: mod.apply(p, t).sum())(params)
    np.testing.assert_array_equal(g["params"]["W"], np.zeros_like(w))  # not trained


def test_bad_model_settings_raise():
    with pytest.raises(ValueError, match="time_embedding"):
        init_params(
            ConditionalMLP(num_classes=2, time_embedding="nope"), (4,), key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="conditioning"):
        init_params(ConditionalMLP(num_classes=2, conditioning="x"), (4,), key=jax.random.key(0))
    with pytest.raises(ValueError, match="divisible"):
        init_params(
            ConditionalUNet(num_classes=2, nf=8, ch_mult=(1, 2, 2)),
            (6, 6, 1),
            key=jax.random.key(0),
        )


def test_cifar10_config_parameter_count():
    """The cifar10 config's U-Net has ~67M parameters (shapes only; nothing is allocated)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("c", CONFIGS / "cifar10_sbgc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = mod.get_config().model.to_dict()
    assert m.pop("name") == "unet"
    net = ConditionalUNet(
        num_classes=10, **{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}
    )
    shapes = jax.eval_shape(lambda: init_params(net, (32, 32, 3), key=jax.random.key(0)))
    n = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
    assert 60e6 < n < 75e6, n


def _param_names(net, event):
    shapes = jax.eval_shape(lambda: init_params(net, event, key=jax.random.key(0)))
    return sorted(shapes["params"])


def test_add_conditioning_keeps_the_checkpoint_layout_and_film_is_identity_at_init():
    """conditioning="add" (the default) has the parameter names earlier runs saved; "film" adds
    a zero-initialised modulation per block, so at init h * (1 + 0) + 0 = h: the FiLM net's
    hidden path equals the same net with the label and time terms removed."""
    add = ConditionalMLP(num_classes=2, hidden=8, n_blocks=2, emb_dim=4)
    want = ["block0_dense0", "block0_dense1", "block0_emb", "block0_norm", "block1_dense0",
            "block1_dense1", "block1_emb", "block1_norm", "embed", "in", "out", "out_norm"]  # fmt: skip
    assert _param_names(add, (3,)) == want
    film = ConditionalMLP(num_classes=2, hidden=8, n_blocks=2, emb_dim=4, conditioning="film")
    names = _param_names(film, (3,))
    assert "block0_film" in names and "block0_emb" not in names
    p = _randomize(init_params(film, (3,), key=jax.random.key(0)), jax.random.key(1))
    p = jax.tree_util.tree_map(lambda a: a, p)
    p["params"]["block0_film"] = jax.tree_util.tree_map(jnp.zeros_like, p["params"]["block0_film"])
    p["params"]["block1_film"] = jax.tree_util.tree_map(jnp.zeros_like, p["params"]["block1_film"])
    x = jax.random.normal(jax.random.key(2), (4, 3))
    t = jnp.array([0.1, 0.4, 0.6, 0.9])
    y0, y1 = jnp.zeros(4, jnp.int32), jnp.ones(4, jnp.int32)
    # with zero modulation neither the label nor the time reach the output
    np.testing.assert_allclose(film.apply(p, x, t, y0), film.apply(p, x, t[::-1], y1), atol=1e-6)


def _load(name, overrides=()):
    from jaxrej.config import load_config

    return load_config(str(CONFIGS / name), list(overrides)).to_dict()


def test_the_mnist_cross_entropy_trains_the_window_its_scorer_reads():
    """configs/mnist_sbgc.py draws the class cross-entropy on [label_cutoff, elbo_label_max]:
    below the cutoff the network sees no label, above the window the scorer reads none."""
    cfg = _load("mnist_sbgc.py")
    t = cfg["training"]
    assert t["class_ce_weight"] > 0
    assert t["class_ce_t_min"] == cfg["model"]["mlp"]["label_cutoff"] > 0
    assert t["class_ce_t_max"] == cfg["eval"]["elbo_label_max"] > t["class_ce_t_min"]


def test_model_name_switches_architecture_from_the_command_line():
    """configs/mnist_sbgc.py carries both architectures; model.name picks one, each section's
    fields reach only its own network, and the flat form of older configs still builds."""
    from jaxrej.training.workdir import build_net

    def net_of(cfg):
        m = dict(cfg["model"])
        return build_net(m.pop("name"), num_classes=10, **m)

    mlp = net_of(_load("mnist_sbgc.py"))
    assert isinstance(mlp, ConditionalMLP) and mlp.conditioning == "film"
    assert mlp.hidden == _load("mnist_sbgc.py")["model"]["mlp"]["hidden"]
    unet = net_of(
        _load("mnist_sbgc.py", ["--config.model.name='unet'", "--config.model.unet.nf=8"])
    )
    assert isinstance(unet, ConditionalUNet) and unet.nf == 8
    wide = net_of(_load("mnist_sbgc_large.py", ["--config.model.name=mlp",
                                                 "--config.model.mlp.hidden=64"]))  # fmt: skip
    assert isinstance(wide, ConditionalMLP) and wide.hidden == 64
    large = net_of(_load("mnist_sbgc_large.py"))
    assert isinstance(large, ConditionalUNet) and large.nf == 64
    flat = net_of(_load("digits_sbgc.py"))  # the flat form: every field is the MLP's
    assert isinstance(flat, ConditionalMLP) and flat.conditioning == "add"
    # a flat field beside the sections applies to the picked architecture
    both = build_net("unet", num_classes=3, unet={"nf": 4}, mlp={"hidden": 8}, conditioning="add")
    assert both.nf == 4 and both.conditioning == "add"
    with pytest.raises(ValueError, match=r"'unet' has no field\(s\) \['hidden'\]"):
        build_net("unet", num_classes=3, unet={"nf": 4, "hidden": 8})
    with pytest.raises(ValueError, match="model.mlp"):
        build_net("mlp", num_classes=3, mlp=5)
    with pytest.raises(ValueError, match="model.name"):
        build_net("resnet", num_classes=3, mlp={})


@pytest.mark.parametrize(
    "sde", [VPSDE(beta_min=0.1, beta_max=20.0), VESDE(sigma_min=0.01, sigma_max=50.0)]
)
def test_preconditioned_score_at_init_is_the_gaussian_datas_score(sde):
    """With the network part F zero (its zero-initialised output layer), the preconditioned score
    is the exact score of Gaussian data N(mu, s^2 I) diffused by the SDE: the marginal at t is
    N(m mu, (m^2 s^2 + std^2) I); checked against jax.grad of that log-density."""
    mu, s = 0.13, 0.31
    net = ConditionalMLP(num_classes=3, hidden=16, n_blocks=1, emb_dim=8, precondition=True,
                         data_mean=mu, data_std=s)  # fmt: skip
    params = init_params(net, (4, 4, 1), key=jax.random.key(0))
    score_fn = make_score_fn(net, sde)
    x = jax.random.normal(jax.random.key(1), (4, 4, 1))
    for t in (1e-4, 0.1, 0.7):
        m, std = sde.mean_coeff(t), sde.std(t)
        logp = lambda z: -0.5 * jnp.sum((z - m * mu) ** 2) / (m**2 * s**2 + std**2)  # noqa: B023, E731
        np.testing.assert_allclose(
            score_fn(params, x, t, 2), jax.grad(logp)(x), rtol=1e-4, atol=1e-6
        )


def test_label_cutoff_hides_the_label_at_small_times():
    """label_cutoff: the gate is 1/2 at the cutoff, < 0.01 at a tenth of it; below it the network's
    output barely depends on the label, above it it does."""
    from jaxrej.models.embeddings import label_gate

    c = 0.03
    g = np.asarray(label_gate(jnp.asarray([c, c / 10, c * 10]), c))
    assert abs(g[0] - 0.5) < 1e-6 and g[1] < 0.01 and g[2] > 0.99
    net = ConditionalMLP(num_classes=3, hidden=16, n_blocks=1, emb_dim=8, conditioning="add",
                         label_cutoff=c)  # fmt: skip
    params = init_params(net, (4,), key=jax.random.key(0))
    params = jax.tree_util.tree_map(lambda p: p + 0.3, params)  # a non-zero output layer
    x = jax.random.normal(jax.random.key(1), (1, 4))

    def spread(t):
        out = [
            net.apply(params, x, jnp.full((1,), t), jnp.full((1,), y, jnp.int32)) for y in range(3)
        ]
        return float(jnp.max(jnp.abs(out[0] - out[1])) + jnp.max(jnp.abs(out[0] - out[2])))

    assert spread(1e-4) < 1e-2 * spread(0.5)


@pytest.mark.parametrize(
    "x, m, s",
    [
        (0.002, 0.99, 1e-3),
        (0.01, 0.99, 1e-3),
        (-0.003, 0.99, 2e-3),
        (0.3, 0.9, 0.4),
        (0.5, 0.5, 0.8),
    ],
)
def test_atom_posterior_against_quadrature(x, m, s, x64):
    """E[z | x_t] and log p(x_t) of x_0 ~ U[lo, hi] diffused to x_t = m x_0 + s z, against
    scipy quadrature over x_0; and the score identity d/dx log p(x_t) = -E[z | x_t] / s."""
    from scipy import integrate, stats

    from jaxrej.models.score import atom_posterior

    lo, hi = 0.0, 1 / 256
    mean, logp = atom_posterior(jnp.float64(x), m, s, lo, hi)
    dens = lambda x0: stats.norm.pdf(x, m * x0, s) / (hi - lo)  # noqa: E731
    z = integrate.quad(dens, lo, hi, epsabs=0, epsrel=1e-12)[0]
    ez = integrate.quad(lambda x0: (x - m * x0) / s * dens(x0), lo, hi, epsabs=0, epsrel=1e-12)[0]
    np.testing.assert_allclose(float(logp), np.log(z), rtol=1e-9)
    np.testing.assert_allclose(float(mean), ez / z, rtol=1e-8)
    grad = jax.grad(lambda v: atom_posterior(v, m, s, lo, hi)[1])(jnp.float64(x))
    np.testing.assert_allclose(float(grad), -float(mean) / s, rtol=1e-8)


def test_group_posterior_against_quadrature(x64):
    """A weighted mixture of bins (one of them far away): E[z | x_t] and log p(x_t) against scipy
    quadrature over x_0, and the score identity d/dx log p(x_t) = -E[z | x_t] / s."""
    from scipy import integrate, stats

    from jaxrej.models.score import group_posterior

    bins = ((251 / 256, 252 / 256, 0.3), (253 / 256, 254 / 256, 3.3), (0.0, 1 / 256, 0.5))
    wsum = sum(w for *_, w in bins)
    for x, m, s in ((0.985, 0.999, 2e-3), (0.993, 0.99, 1e-3), (0.7, 0.9, 0.3)):
        dens = [lambda x0, s=s, m=m, x=x: stats.norm.pdf(x, m * x0, s) for _ in bins]
        z = sum(w / wsum / (hi - lo) * integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-12)[0]
                for (lo, hi, w), f in zip(bins, dens, strict=True))  # fmt: skip
        ez = sum(w / wsum / (hi - lo) * integrate.quad(lambda x0, f=f, m=m, s=s, x=x:
                                                       (x - m * x0) / s * f(x0), lo, hi,
                                                       epsabs=0, epsrel=1e-12)[0]
                 for (lo, hi, w), f in zip(bins, dens, strict=True))  # fmt: skip
        mean, logp = group_posterior(jnp.float64(x), m, s, bins)
        np.testing.assert_allclose(float(logp), np.log(z), rtol=1e-9)
        np.testing.assert_allclose(float(mean), ez / z, rtol=1e-7)
        grad = jax.grad(lambda v: group_posterior(v, m, s, bins)[1])(jnp.float64(x))  # noqa: B023
        np.testing.assert_allclose(float(grad), -float(mean) / s, rtol=1e-7)


@pytest.mark.parametrize("open_group", [0, 1])
def test_atom_gate_open_gives_the_groups_diffused_score(open_group, x64):
    """With one group's gate output a -> +inf (the output layer's bias of its channel set high)
    every pixel is 'in that group': the score is jax.grad of the group's diffused log-density;
    finite in float32 from t = 1e-7 to 1 far outside the bins too; without precondition, or with
    a malformed group, the net refuses."""
    from jaxrej.models.score import group_posterior

    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    groups = (((0.0, 1 / 256, 1.0),), ((252 / 256, 253 / 256, 1.4), (254 / 256, 1.0, 0.7)))
    net = ConditionalMLP(num_classes=3, hidden=16, n_blocks=1, emb_dim=8, precondition=True,
                         data_mean=0.13, data_std=0.31, atoms=groups)  # fmt: skip
    params = init_params(net, (3, 3, 1), key=jax.random.key(0))
    bias = params["params"]["out"]["bias"]
    # (D, 3) flattened: the open group's channel above any -log p(x_t | group) in float32 range
    params["params"]["out"]["bias"] = bias.at[1 + open_group :: 3].set(1e12)
    score_fn = make_score_fn(net, sde)
    x = jnp.linspace(-0.01, 1.0, 9).reshape(3, 3, 1)  # float64: the truth
    bins = groups[open_group]
    for t in (1e-7, 1e-5, 1e-3, 0.1, 1.0):
        m, std = sde.mean_coeff(t), sde.std(t)
        want = jax.grad(lambda v: jnp.sum(group_posterior(v, m, std, bins)[1]))(x)  # noqa: B023
        got = score_fn(params, x.astype(jnp.float32), jnp.float32(t), 1)
        assert got.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(got)))
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=1e-3 / std)  # float32 far tails
    with pytest.raises(ValueError, match="atoms"):
        init_params(ConditionalMLP(num_classes=3, hidden=8, atoms=groups), (4,),
                    key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match="atoms"):
        init_params(ConditionalMLP(num_classes=3, hidden=8, precondition=True,
                                   atoms=(((0.5, 0.1, 1.0),),)), (4,), key=jax.random.key(0))  # fmt: skip


def test_local_refinement_is_a_3x3_convolution_with_a_5x5_reach():
    """conv3x3 equals im2col (the 9 zero-padded shifted views) times its (9 C_in, C_out) kernel
    and lax's 'SAME' convolution; LocalRefine's
    output at a pixel moves only with the inputs within 2 pixels (two 3x3 layers), and the MLP
    refuses `local` for a vector event."""
    from jaxrej.models.local import LocalRefine, conv3x3

    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.concatenate([xp[:, i : i + 7, j : j + 6] for i in range(3) for j in range(3)], -1)
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))  # (dy, dx, C_in, C_out)
    ref = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    np.testing.assert_allclose(patches @ np.asarray(w).reshape(27, 5), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv3x3(x, w.reshape(27, 5)), ref, rtol=1e-5, atol=1e-5)

    net = LocalRefine(channels=4)
    pred, emb = x[..., :2], jnp.ones((2, 8))
    params = net.init(jax.random.key(2), x, pred, emb)
    params = jax.tree_util.tree_map(lambda a: a + 0.3, params)  # the out layer is zero at init
    jac = jax.jacobian(lambda z: net.apply(params, z, pred, emb)[0, 3, 3, 0])(x)[0, ..., 0]
    reach = np.zeros((7, 6), bool)
    reach[1:6, 1:6] = True
    assert np.all(np.asarray(jac)[~reach] == 0) and np.all(np.abs(np.asarray(jac))[reach] > 0)
    with pytest.raises(ValueError, match="local"):
        init_params(ConditionalMLP(num_classes=3, hidden=8, local=4), (5,), key=jax.random.key(0))
