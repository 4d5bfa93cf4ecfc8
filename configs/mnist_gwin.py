"""GWIN on the MNIST subset in ../shared/data (28x28, 256 levels): LeNet-5 with MC dropout and a
conditional WGAN-GP, the GWIN paper's setting (Cosentino & Zhu 2019) at a smaller scale; every
field not set here is configs/digits_gwin.py's (so, as there, the generator learns on the 30%
of the training rows held out of the classifier's training: gan.gen_inputs = "heldout").

Run (from the repository root; the dataset string names the local idx files, split by the
registry's fixed rule into 5,000 train / 1,000 validation / 2,000 test):
    jaxrej gwin --config configs/mnist_gwin.py --workdir runs/mnist_gwin
Not measured yet.
"""

import importlib.util
import os


def get_config():
    spec = importlib.util.spec_from_file_location(
        "_digits_gwin", os.path.join(os.path.dirname(__file__), "digits_gwin.py")
    )
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    config = base.get_config()
    config.data.dataset = (
        "idx:../shared/data/mnist-8k-images-idx3-ubyte.gz,"
        "../shared/data/mnist-8k-labels-idx1-ubyte.gz"
    )
    config.classifier.name = "lenet5"
    config.classifier.epochs = 20
    config.classifier.batch_size = 128
    config.gan.n_steps = 5000
    config.gan.noise_dim = 32
    config.gan.clf_samples = 0  # the first version's penalty: dropout off
    config.gan.input_noise = 0.0
    config.gan.generator_hidden = (512, 512)
    config.gan.critic_channels = (64, 128)
    config.gan.critic_dense = 256
    config.gan.checkpoint_every = 500
    return config
