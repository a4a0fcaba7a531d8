"""Task families, one module each, registered for ``task_family=<name>``."""

from evolopt.task_families import image_conv, image_mlp, lm, mixture, quadratic, rl_brax, rl_gymnax, rosenbrock  # noqa: F401  (imported to register)
