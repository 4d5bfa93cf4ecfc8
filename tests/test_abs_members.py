"""jaxrej.abs with M members per class: the class score is the mixture's bound, against the
closed-form log-likelihood of a mixture of linear-Gaussian decoders; the reconstructions come
from the member that scored; each member trains on its own class's rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from jaxrej import abs as A
from jaxrej.abs.model import class_params
from jaxrej.abs.training import _batch, _class_table


def _linear_mixture(D=10, d=2, C=2, M=3, sigma=0.3, seed=0):
    """C classes of M linear-Gaussian decoders G_{c,m}(z) = W z + b (class-major stacking)."""
    model = A.ABSModel(num_classes=C, event_shape=(D,), latent_dim=d, hidden=(), sigma=sigma,
                       encoder=False, output="linear", members=M)  # fmt: skip
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(C * M, d, D)) * 0.5
    b = rng.normal(size=(C * M, D)) * 0.4
    params = {"dec": {"params": {"Dense_0": {"kernel": jnp.asarray(W, jnp.float32),
                                             "bias": jnp.asarray(b, jnp.float32)}}}, "enc": {}}  # fmt: skip

    def member_logp(x, i):
        return multivariate_normal(b[i], W[i].T @ W[i] + sigma**2 * np.eye(D)).logpdf(x)

    return model, params, member_logp


def test_class_score_is_the_mixture_log_likelihood_at_the_optimum():
    C, M = 2, 3
    model, params, member_logp = _linear_mixture(C=C, M=M)
    x = np.random.default_rng(1).normal(size=(4, 10)).astype(np.float32)
    bank = A.latent_bank(model, params, n=64, key=jax.random.key(0))
    res = A.class_bounds(model, params, bank, jnp.asarray(x),
                         options=A.LatentOptions(steps=300, lr=0.05, encoder_start=False))  # fmt: skip
    per = np.array([[member_logp(xi, i) for i in range(C * M)] for xi in x])  # (B, C M)
    np.testing.assert_allclose(np.asarray(res.decoder_score), per, atol=5e-3)
    truth = logsumexp(per.reshape(4, C, M), axis=-1) - np.log(M)  # log 1/M sum_m p_m(x | c)
    np.testing.assert_allclose(np.asarray(res.score), truth, atol=5e-3)
    np.testing.assert_array_equal(np.asarray(res.member), per.reshape(4, C, M).argmax(-1))
    # with no search steps every member's score is a bound, so the mixture's is one too
    no_steps = A.class_bounds(model, params, bank, jnp.asarray(x), options=A.LatentOptions(steps=0))
    assert np.all(np.asarray(no_steps.score) <= truth + 1e-3)


def test_one_member_passes_the_scores_through_unchanged():
    model, params, _ = _linear_mixture(C=3, M=1)
    s = jax.random.normal(jax.random.key(0), (5, 3))
    r = A.latent.mixture(model, s, s + 1.0, jnp.zeros((5, 3, 2)))
    np.testing.assert_array_equal(np.asarray(r.score), np.asarray(s))
    np.testing.assert_array_equal(np.asarray(r.member), 0)


def test_reconstructions_are_drawn_by_the_member_that_scored():
    C, M = 3, 2
    model = A.ABSModel(num_classes=C, event_shape=(4, 4, 1), latent_dim=2, hidden=(8,),
                       encoder_hidden=(8,), sigma=0.3, members=M)  # fmt: skip
    params = A.init_params(model, key=jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (2, C, 2))
    member = jnp.array([[0, 1, 1], [1, 0, 1]])
    rec = A.latent.reconstructions(model, params, z, member)
    for b in range(2):
        for c in range(C):
            p = class_params(params["dec"], c * M + int(member[b, c]))
            want = A.decode(model, p, z[b, c]).reshape(4, 4, 1)
            np.testing.assert_allclose(np.asarray(rec[b, c]), np.asarray(want), rtol=1e-6)
    # the two members of a class are different decoders (own initialisation)
    flat = lambda p: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(p)])  # noqa: E731
    assert not np.allclose(
        flat(class_params(params["dec"], 0)), flat(class_params(params["dec"], 1))
    )


def test_each_member_draws_its_own_rows_of_its_class():
    C, M = 3, 2
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1])
    table, counts = _class_table(labels, C, M)
    assert table.shape[0] == C * M and counts.tolist() == [5, 5, 4, 4, 3, 3]
    images = jnp.asarray(np.arange(12)[:, None] * np.ones((1, 4)), jnp.int32)  # pixel = row index
    x = _batch(images, jnp.asarray(table), jnp.asarray(counts), 16, jax.random.key(0), 256)
    rows = np.rint(np.asarray(x[..., 0]) * 255).astype(int)  # (C M, 16) row indices drawn
    for i in range(C * M):
        assert set(labels[rows[i]]) == {i // M}  # only its own class's rows
    assert not np.array_equal(rows[0], rows[1])  # the members of class 0 draw different rows


def test_members_refuse_the_discriminative_term(tmp_path):
    model = A.ABSModel(num_classes=2, event_shape=(4, 4, 1), latent_dim=2, hidden=(8,),
                       encoder_hidden=(8,), members=2)  # fmt: skip
    images = np.zeros((8, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match="training.disc_weight"):
        A.train(workdir=str(tmp_path), model=model, init_params=A.init_params(model, key=jax.random.key(0)),
                images=images, labels=np.arange(8) % 2, key=jax.random.key(1), progress=False,
                opts=A.ABSTrainOptions(n_iters=2, disc_weight=1.0))  # fmt: skip
    with pytest.raises(ValueError, match="members"):
        A.ABSModel(members=0)
