"""GWIN on the MNIST subset in ../shared/data (28x28, 256 levels): LeNet-5 with MC dropout and a
conditional WGAN-GP, the GWIN paper's setting (Cosentino & Zhu 2019) at a smaller scale.

Run (from the repository root; the dataset string names local idx files, see the real-data issue):
    jaxrej gwin --config configs/mnist_gwin.py --workdir runs/mnist_gwin
Not measured yet: needs `load_dataset` to read "idx:IMAGES,LABELS" strings with a fixed split.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.dataset = (
        "idx:../shared/data/mnist-8k-images-idx3-ubyte.gz,"
        "../shared/data/mnist-8k-labels-idx1-ubyte.gz"
    )

    config.classifier = ml_collections.ConfigDict()
    config.classifier.name = "lenet5"
    config.classifier.dropout = 0.25
    config.classifier.epochs = 20
    config.classifier.batch_size = 128
    config.classifier.learning_rate = 1e-3
    config.classifier.weight_decay = 0.0
    config.classifier.mc_samples = 50

    config.gan = ml_collections.ConfigDict()
    config.gan.tau_star = 0.95
    config.gan.n_steps = 5000
    config.gan.batch_size = 64
    config.gan.n_critic = 5
    config.gan.lambda_gp = 10.0
    config.gan.lambda_loss = 10.0
    config.gan.lr = 1e-4
    config.gan.b1 = 0.0
    config.gan.b2 = 0.9
    config.gan.noise_dim = 32
    config.gan.gen_inputs = "all"  # "all" training inputs | "uncertain" (outside the pool)
    config.gan.clf_samples = 0  # 0: penalty on the dropout-off classifier; k: k MC-dropout draws
    config.gan.input_noise = 0.0  # Gaussian noise std on the generator's training inputs
    config.gan.input_shift = 0  # max random translation (pixels) of the generator's inputs
    config.gan.generator_hidden = (512, 512)
    config.gan.residual = True  # G(x, z) = sigmoid(logit(x) + MLP(x, z)): starts at identity
    config.gan.critic_channels = (64, 128)
    config.gan.critic_dense = 256
    config.gan.log_every = 100
    config.gan.checkpoint_every = 500
    config.gan.max_to_keep = 2

    config.eval = ml_collections.ConfigDict()
    config.eval.taus = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    config.eval.grid_tau = 0.9
    config.eval.grid_size = 16
    config.eval.batch_size = 256
    return config
