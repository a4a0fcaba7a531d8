"""evolopt: meta-train learned optimizers with evolution strategies; use them as optax transforms.

Using a trained optimizer needs only jax and optax::

    opt = evolopt.load_optimizer("runs/x/theta.npz", learning_rate=1e-3)
    options = evolopt.xla_cpu.compiler_options(vector_width=512)  # on CPU: faster updates; None elsewhere
    step = jax.jit(train_step, compiler_options=options)
"""

from evolopt import xla_cpu
from evolopt.export import (
    ThetaFileError,
    average_theta_files,
    load_optimizer,
    load_theta_file,
    pretrained_names,
    save_theta_file,
)

__all__ = [
    "ThetaFileError",
    "average_theta_files",
    "load_optimizer",
    "load_theta_file",
    "pretrained_names",
    "save_theta_file",
    "xla_cpu",
]
__version__ = "0.1.0"
