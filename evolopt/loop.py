"""The host side of meta-training: build from config, run generations, log, checkpoint, export.

The numerics live in :mod:`evolopt.meta` (one jitted generation step); this file
only orchestrates it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from omegaconf import DictConfig, OmegaConf

from evolopt import distributed
from evolopt.architectures.baselines import baseline
from evolopt.checkpoint import Checkpointer, has_checkpoint
from evolopt.config import group_config
from evolopt.export import ThetaFileError, check_structure, load_learned_optimizer, resolve_path, save_theta_file
from evolopt.learnable import check_learnable
from evolopt.logger import RunLogger, plot_run
from evolopt.meta import MetaTrainer, choose_member_chunks, free_device_memory, make_evaluator, population_mesh
from evolopt.progress import start_line
from evolopt.provenance import provenance
from evolopt.registry import ARCHITECTURES, STRATEGIES, TASK_FAMILIES, ConfigError
from evolopt.tb import write_config
from evolopt.unroll import UnrollConfig

# Keys that may change when a run is resumed.
RESUMABLE_CHANGES = {
    "generations",
    "resume",
    "progress",
    "run_dir",
    "plugins",
    "checkpoint_every",
    "keep_checkpoints",
    "time_budget_minutes",
    "member_chunks",  # same numbers, different memory use
    "distributed",  # the population splits over any number of processes with the same numbers
}


MEMORY_FRACTION = 0.6  # member_chunks=auto: share of free device memory the step may plan to use


def build(cfg: DictConfig) -> tuple[MetaTrainer, Any]:
    """The trainer and the initial theta that a config describes."""
    _check_counts(cfg)
    arch_name, arch_cfg = group_config(cfg, "arch")
    fam_name, fam_cfg = group_config(cfg, "task_family")
    strat_name, strat_cfg = group_config(cfg, "strategy")
    lopt = ARCHITECTURES.build(arch_name, **arch_cfg)
    family = TASK_FAMILIES.build(fam_name, **fam_cfg)
    # task augmentation (task_families/augment.py): the `augmentation:` config section
    from evolopt.augment import from_config as augment_from_config

    family = augment_from_config(family, cfg.get("augmentation"))
    k_theta = jax.random.fold_in(jax.random.key(cfg.seed), 0)
    theta0 = initial_theta(lopt, str(cfg.get("theta_init", "random")), k_theta)
    context = {"tasks_per_member": cfg.tasks_per_member}
    strategy = STRATEGIES.build(strat_name, cfg.population_size, theta0, cfg.generations, context=context, **strat_cfg)
    try:
        unroll_cfg = UnrollConfig(**OmegaConf.to_container(cfg.unroll))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad unroll config: {e}") from None
    chunks = 1 if cfg.member_chunks == "auto" else cfg.member_chunks  # auto: chosen in meta_train
    try:
        trainer = MetaTrainer(strategy, family, lopt, unroll_cfg, cfg.tasks_per_member, population_mesh(), chunks)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return trainer, theta0


def initial_theta(lopt: Any, spec: str, key: jax.Array) -> Any:
    """Where meta-training starts: ``random`` (the architecture's initialiser), a name the
    architecture offers (``lopt.named_inits``, e.g. Celo2's ``muon``), or the theta of a
    theta file, run dir or pretrained name of the same architecture (a warm start; only
    theta is taken, the file's hyperparameters are not)."""
    if spec == "random":
        return lopt.init_theta(key)
    if spec in lopt.named_inits:
        return lopt.named_inits[spec](key)
    choices = ", ".join(["random", *sorted(lopt.named_inits), "a theta file, run dir or pretrained name"])
    if not resolve_path(spec).is_file():
        raise ConfigError(f"theta_init='{spec}' is not a valid choice for arch '{lopt.name}'; valid: {choices}")
    try:
        _, theta = load_learned_optimizer(spec, arch=lopt.name)
    except ThetaFileError as e:
        raise ConfigError(f"theta_init='{spec}': {e}") from None
    try:  # the file fits its own arch options; it must also fit this run's (e.g. hidden sizes)
        check_structure(spec, lopt.name, theta, jax.eval_shape(lopt.init_theta, key))
    except ThetaFileError as e:
        raise ConfigError(f"theta_init='{spec}': its theta does not fit this run's arch options ({e})") from None
    return jax.tree.map(jnp.asarray, theta)


def _jit_step(trainer: MetaTrainer, state: Any):
    """The generation step, jitted: state donated, metrics replicated (readable on every process)."""
    replicated = NamedSharding(trainer.mesh, PartitionSpec())
    return jax.jit(trainer.step, donate_argnums=0, out_shardings=(trainer.state_sharding(state), replicated))


def _check_counts(cfg: DictConfig) -> None:
    for key in ("generations", "population_size", "tasks_per_member", "checkpoint_every", "keep_checkpoints"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r} must be a positive integer")
    if cfg.member_chunks != "auto" and (not isinstance(cfg.member_chunks, int) or cfg.member_chunks < 1):
        raise ConfigError(f"member_chunks={cfg.member_chunks!r} must be a positive integer or auto")
    for key in ("meta_loss_every", "every", "num_tasks", "steps"):
        if not isinstance(cfg.evaluation[key], int) or cfg.evaluation[key] < 1:
            raise ConfigError(f"evaluation.{key}={cfg.evaluation[key]!r} must be a positive integer")


def _check_resumable(run_dir: Path, cfg: DictConfig) -> None:
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    now = OmegaConf.to_container(cfg)
    for key in sorted(set(saved) | set(now)):
        if key not in RESUMABLE_CHANGES and saved.get(key) != now.get(key):
            raise ConfigError(
                f"run_dir '{run_dir}' holds a run with {key}={saved.get(key)}, not {now.get(key)}; "
                "resume it with its own config or choose a new run_dir"
            )


def prepare_run_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """``(run_dir, resuming)``, refusing anything that would overwrite another run."""
    run_dir = Path(cfg.run_dir)
    resume = str(cfg.resume).lower()
    if resume not in ("auto", "true", "false"):
        raise ConfigError(f"bad resume '{cfg.resume}'; valid choices: auto, true, false")
    exists = has_checkpoint(run_dir / "checkpoints")
    if resume == "true" and not exists:
        raise ConfigError(f"resume=true but run_dir '{run_dir}' holds no checkpoint")
    if exists and resume == "false":
        raise ConfigError(f"run_dir '{run_dir}' already holds a run; pass resume=true or choose a new run_dir")
    if not exists and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run_dir '{run_dir}' exists and is not an evolopt run; choose a new run_dir")
    if exists:
        _check_resumable(run_dir, cfg)
    return run_dir, exists


def meta_train(cfg: DictConfig) -> Path:
    """Run (or resume) the meta-training a config describes; return the run directory.

    Under ``jax.distributed`` every process calls this with the same config; the
    decisions about the run directory are taken by all before process 0 writes.
    """
    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    main = distributed.is_main_process()
    trainer, theta0 = build(cfg)
    run_dir, resuming = prepare_run_dir(cfg)
    # usability: refuse a family the arch learns nothing on; say what starts before compiling
    check_learnable(trainer.lopt, trainer.family.unaugmented or trainer.family, theta0, group_config(cfg, "arch")[1])
    if main:
        devices = f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
        print(start_line(cfg, run_dir, resuming, devices), file=sys.stderr, flush=True)
    state = trainer.init(jax.random.fold_in(jax.random.key(cfg.seed), 1), theta0)
    ev = cfg.evaluation
    plain = trainer.family.unaugmented or trainer.family  # users train un-reparameterised models
    lopt_eval = make_evaluator(plain, trainer.lopt, ev.num_tasks, ev.steps, cfg.unroll.loss_clip)
    adam = baseline("adam", ev.adam_lr)
    adam_eval = make_evaluator(plain, adam, ev.num_tasks, ev.steps, cfg.unroll.loss_clip)
    eval_key = jax.random.fold_in(jax.random.key(cfg.seed), 2)  # the same validation tasks every time
    try:  # trace everything once before touching the disk: a bad option fails here, cleanly
        jax.eval_shape(trainer.step, state)
        jax.eval_shape(lopt_eval, theta0, eval_key)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the config does not give a valid training step: {str(e).splitlines()[0]}") from None
    step = _jit_step(trainer, state)
    if cfg.member_chunks == "auto":  # compile all-at-once; split the members only if that would not fit
        step = step.lower(state).compile()
        use = step.memory_analysis()
        if use is not None:
            fixed = use.argument_size_in_bytes + use.output_size_in_bytes
            members = trainer.strategy.population_size // trainer.mesh.size
            chunks = choose_member_chunks(
                fixed, use.temp_size_in_bytes, members, MEMORY_FRACTION * free_device_memory()
            )
            if chunks > 1:
                trainer = dataclasses.replace(trainer, member_chunks=chunks)
                step = _jit_step(trainer, state)

    distributed.barrier("evolopt:run-dir-checked")  # nobody writes before every process has looked
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            OmegaConf.save(cfg, run_dir / "config.yaml")
        else:  # record a changed horizon, keep everything else as it was
            saved = OmegaConf.load(run_dir / "config.yaml")
            saved.generations = cfg.generations
            OmegaConf.save(saved, run_dir / "config.yaml")
    distributed.barrier("evolopt:run-dir-ready")
    ckpt = Checkpointer(run_dir / "checkpoints", cfg.keep_checkpoints)
    if resuming:
        state = ckpt.restore(state)
    start = int(state.generation)
    adam_curves, adam_valid = jax.device_get(adam_eval({}, eval_key))

    logger = RunLogger(run_dir, cfg.generations, start, cfg.progress, write=main)
    write_config(logger.writer, cfg)  # usability: the config in TensorBoard's text tab
    if resuming:
        logger.note(f"resumed at generation {start} of {cfg.generations} from {run_dir / 'checkpoints'}")
    if jax.process_count() > 1:
        logger.note(f"distributed run: {distributed.describe()}")
    if trainer.member_chunks > 1:
        logger.note(f"training each device's members in {trainer.member_chunks} sequential chunks (member_chunks)")
    logger.scalars(start, {"meta_loss/adam": float(adam_curves.mean())})
    arch_name, arch_cfg = group_config(cfg, "arch")

    def export(generation: int) -> None:
        theta = trainer.strategy.mean(state.strategy)  # on every process: a computation over the global mesh
        if not main:
            return
        info = provenance(cfg, run_dir)  # usability: task family, strategy, seed, versions, commit, evaluation
        save_theta_file(run_dir / "theta.npz", theta, arch_name, arch_cfg, generation=generation, **info)

    def evaluate(generation: int, curves_too: bool) -> dict[str, float]:
        curves, valid = jax.device_get(lopt_eval(trainer.strategy.mean(state.strategy), eval_key))
        out = {"meta_loss/mean_theta": float(curves.mean()), "meta_loss/adam": float(adam_curves.mean())}
        if curves_too:
            out |= {
                "eval/final_train_loss": float(curves[:, -1].mean()),
                "eval/adam_final_train_loss": float(adam_curves[:, -1].mean()),
                "eval/valid_loss": float(valid.mean()),
                "eval/adam_valid_loss": float(adam_valid.mean()),
            }
            logger.curves(generation, {"learned": curves.mean(0), "adam": adam_curves.mean(0)})
        return out

    if start == 0:
        logger.record(0, evaluate(0, curves_too=True))
    tick = began = time.perf_counter()
    budget_s = 60.0 * float(cfg.get("time_budget_minutes", 0) or 0)
    for gen in range(start, cfg.generations):
        state, metrics = step(state)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        metrics["speed/generations_per_s"] = 1.0 / (now - tick)
        metrics["speed/member_steps_per_s"] = trainer.member_steps_per_generation / (now - tick)
        done = gen + 1
        if done % ev.meta_loss_every == 0 or done == cfg.generations:
            metrics |= evaluate(done, curves_too=done % ev.every == 0 or done == cfg.generations)
        if metrics["fitness/nonfinite_steps"] > 0:
            logger.note(
                f"generation {done}: {int(metrics['fitness/nonfinite_steps'])} inner steps diverged (NaN/inf), "
                "scored as worst"
            )
        logger.generation(done, metrics)
        out_of_time = budget_s > 0 and distributed.agree(time.perf_counter() - began > budget_s)  # same on all
        if done % cfg.checkpoint_every == 0 or done == cfg.generations or out_of_time:
            ckpt.save(done, state)
            export(done)
        if out_of_time:
            logger.note(
                f"time budget of {cfg.time_budget_minutes} min spent at generation {done}; "
                "run the same command again to continue"
            )
            break
        tick = time.perf_counter()
    logger.close()
    ckpt.close()
    if start >= cfg.generations:
        export(start)
    if main:
        plot_run(run_dir)
    return run_dir


def summarize(run_dir: Path) -> str:
    from evolopt.logger import read_jsonl

    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if not math.isnan(r.get("meta_loss/mean_theta", math.nan))]
    if not rows:
        return f"run saved to {run_dir}"
    first, last = rows[0], rows[-1]
    return (
        f"run saved to {run_dir}: meta-loss of mean theta {first['meta_loss/mean_theta']:.4f} "
        f"(gen {first['generation']}) -> {last['meta_loss/mean_theta']:.4f} (gen {last['generation']}); "
        f"Adam on the same tasks: {last['meta_loss/adam']:.4f}"
    )


def export_run(run_dir: str | Path, out: str | Path | None = None, generation: int | None = None) -> Path:
    """Write the mean theta of a run's checkpoint (latest, or ``generation``) as a theta file."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not has_checkpoint(run_dir / "checkpoints"):
        raise ConfigError(f"'{run_dir}' is not an evolopt run directory (no config.yaml or checkpoints)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    from evolopt.config import import_plugins_for_run

    import_plugins_for_run(cfg)  # usability: plug-ins only if the run's entries need them (and says which)
    trainer, theta0 = build(cfg)
    ckpt = Checkpointer(run_dir / "checkpoints", cfg.keep_checkpoints)
    steps = ckpt.manager.all_steps()
    if generation is not None and generation not in steps:
        raise ConfigError(f"no checkpoint for generation {generation} in '{run_dir}'; available: {sorted(steps)}")
    state = ckpt.restore(trainer.init(jax.random.key(0), theta0), generation)
    ckpt.close()
    arch_name, arch_cfg = group_config(cfg, "arch")
    out = run_dir / "theta.npz" if out is None else Path(out)
    gen = int(state.generation)
    info = provenance(cfg, run_dir)  # usability: see evolopt/provenance.py
    return save_theta_file(out, trainer.strategy.mean(state.strategy), arch_name, arch_cfg, generation=gen, **info)
