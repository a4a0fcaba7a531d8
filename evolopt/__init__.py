"""evolopt: meta-train learned optimizers with evolution strategies; use them as optax transforms.

Using a trained optimizer needs only jax and optax::

    opt = evolopt.load_optimizer("runs/x/theta.npz", learning_rate=1e-3)
"""

__all__ = ["load_optimizer", "load_theta_file", "save_theta_file"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `python -m evolopt.export` does not import its own module twice.
    if name in __all__:
        from evolopt import export

        return getattr(export, name)
    raise AttributeError(f"module 'evolopt' has no attribute '{name}'")
