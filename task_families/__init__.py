"""Task families, one module each, registered for ``task_family=<name>``."""

from evolopt.task_families import (  # noqa: F401  (imported to register)
    image_conv,
    image_mlp,
    lm,
    mixture,
    quadratic,
    regression,
    rl_brax,
    rl_gymnax,
    rosenbrock,
)
