"""GWIN on the embedded digits (8x8, 17 levels): small MC-dropout CNN, conditional WGAN-GP.

Run:
    jaxrej gwin --config configs/digits_gwin.py --workdir runs/digits_gwin
Measured (seeds 0-2, --config.seed=N, 3 runs at once on 2 shared CPU cores at load ~8-10: ~10 min
wall, 181 s CPU each): test accuracy 97.8 / 97.2 / 97.5%; accuracy on the rejected subset before
-> after transformation, tau = 0.7 / 0.8 / 0.9 / 0.95 / 0.99:
    seed 0: 65.0->70.0, 72.0->76.0, 84.4->86.7, 88.6->90.0, 94.3->95.0   (better at every tau)
    seed 1: 57.1->57.1, 69.0->69.0, 78.6->78.6, 85.9->85.9, 92.9->92.9   (no prediction changes)
    seed 2: 64.7->58.8, 75.0->71.9, 83.3->81.5, 89.5->88.4, 94.6->94.0   (worse: 1 net break)
The acceptance target (after > before for every tau >= 0.7 on all three seeds) is NOT met. The
MC-dropout penalty (clf_samples) and input noise replaced the dropout-off penalty of the first
version (seed 0: 65.0 -> 45.0 at tau 0.7); no variant tried (see the GWIN notes in the README)
changed more than +-2 rejected test examples per seed, with signs that differ between seeds.
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
