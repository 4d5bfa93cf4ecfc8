"""GWIN on the embedded digits (8x8, 17 levels): small MC-dropout CNN, conditional WGAN-GP.

Run:
    jaxrej gwin --config configs/digits_gwin.py --workdir runs/digits_gwin --config.seed=S
    jaxrej gwin ... --config.eval.test=False     # validation table only: the test rows unread
A stratified 20% of the 1,437 training rows (data.val_fraction) is the validation split: nothing
trains on it and settings are chosen on its table. Of the other rows the classifier trains on a
stratified 70%; the generator learns on the other 30% (gan.gen_inputs = "heldout"), inputs the
classifier has not memorised; lambda_Loss = 50, 100 generator steps (after 600 steps the
generator corrects its own misclassified inputs but not unseen ones: docs/gwin.md).

Measured: `python -m benchmarks.gwin_seeds` (benchmarks/results/gwin_seeds.md; docs/gwin.md reads
it) runs seeds 0-4 for each candidate setting with eval.test=False, chooses on the validation
rows, then reads the test rows once for the chosen setting: accuracy on the test digits rejected
at tau = 0.9, mean over seeds 0-4, 81.5 -> 84.0% (+2.5 +- 2.7 points, 0 to +6.3; net +10 digits
over the five seeds, net 0 on seeds 1 and 4). The settings of earlier versions of
this file were chosen by looking at the test rows of seeds 0-2 (their numbers are withdrawn: on
seeds 3 and 4 the gain was zero or negative).
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "digits"
    # a stratified share of the training rows, never trained on: settings are chosen here
    config.data.val_fraction = 0.2

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
    config.gan.n_steps = 100  # chosen on the validation rows over 600 (benchmarks/gwin_seeds)
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
    config.gan.heldout_fraction = 0.3
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
    config.eval.test = True  # False: the validation table only (while choosing settings)
    return config
