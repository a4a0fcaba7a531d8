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
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evolopt import compile_cache, cpu_devices, distributed, xla_cpu
from evolopt.architectures.baselines import baseline
from evolopt.checkpoint import Checkpointer, has_checkpoint
from evolopt.config import group_config
from evolopt.export import ThetaFileError, check_structure, load_learned_optimizer, resolve_path, save_theta_file
from evolopt.learnable import check_learnable
from evolopt.logger import RunLogger, plot_run
from evolopt.meta import MetaTrainer, make_curve_evaluator, plan_memory, population_mesh
from evolopt.progress import start_line
from evolopt.provenance import provenance
from evolopt.registry import ARCHITECTURES, STRATEGIES, TASK_FAMILIES, ConfigError
from evolopt.resume import RESUMABLE_CHANGES, disk_full, open_run_dir, prepare_run_dir  # noqa: F401 (API)
from evolopt.run_dir import RunAborted, StopRequest, fault
from evolopt.unroll import META_LOSSES, META_WEIGHTS, UnrollConfig, check_valid_data, check_valid_share


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
    try:
        check_valid_data(family, unroll_cfg.meta_loss, option="unroll.meta_loss")
    except ValueError as e:  # and what to do
        raise ConfigError(f"{e} (image_mlp, image_conv and regression have it); use unroll.meta_loss=train") from None
    chunks = 1 if cfg.member_chunks == "auto" else cfg.member_chunks  # auto: chosen in meta_train
    try:
        mesh, cpu = population_mesh(), (cfg.get("cpu_reassociate", True), cfg.get("cpu_vector_width"))
        trainer = MetaTrainer(strategy, family, lopt, unroll_cfg, cfg.tasks_per_member, mesh, chunks, *cpu)
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


def _check_counts(cfg: DictConfig) -> None:
    for key in ("generations", "population_size", "tasks_per_member", "checkpoint_every", "keep_checkpoints"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r} must be a positive integer")
    if cfg.population_size % 2:
        raise ConfigError(
            f"population_size={cfg.population_size} must be even: members are antithetic pairs (i, i + N/2)"
        )
    if cfg.member_chunks != "auto" and (not isinstance(cfg.member_chunks, int) or cfg.member_chunks < 1):
        raise ConfigError(f"member_chunks={cfg.member_chunks!r} must be a positive integer or auto")
    for key in ("meta_loss_every", "every", "num_tasks", "steps"):
        if not isinstance(cfg.evaluation[key], int) or cfg.evaluation[key] < 1:
            raise ConfigError(f"evaluation.{key}={cfg.evaluation[key]!r} must be a positive integer")


def check_config(cfg: DictConfig) -> None:
    """Every check of a composed config that needs no building: ConfigError in one line.
    The CLI runs it on each job of a sweep before any job starts."""
    check_values(cfg)
    _check_counts(cfg)


def check_values(cfg: DictConfig) -> None:
    """Values every run needs, in one line each: interpolations resolve, an integer seed,
    a positive finite ``strategy.sigma`` (a zero search scale makes every update NaN)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "the config"
        raise ConfigError(f"bad value for '{key}': {str(e).splitlines()[0]}") from None
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r} must be an integer, e.g. seed=0")
    reassociate = cfg.get("cpu_reassociate", True)
    if not isinstance(reassociate, bool):
        raise ConfigError(f"cpu_reassociate={reassociate!r} must be true or false")
    cpu_devices.check(cfg.get("cpu_devices", "auto"))
    compile_cache.check(cfg.get("compile_cache", "auto"))
    try:
        xla_cpu.check_vector_width(cfg.get("cpu_vector_width"), option="cpu_vector_width")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sigma = cfg.get("strategy", {}).get("sigma")
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"strategy.sigma={sigma!r} must be a positive number (the search scale), e.g. 0.01")
    for key, choices, default in (("meta_loss", META_LOSSES, "train"), ("meta_weight", META_WEIGHTS, "uniform")):
        value = cfg.get("unroll", {}).get(key, default)
        if value not in choices:
            raise ConfigError(f"unroll.{key}={value!r}; valid choices: {', '.join(choices)}")
    try:
        check_valid_share(cfg.get("unroll", {}).get("valid_share", 0.5), option="unroll.valid_share")
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclasses.dataclass
class _Run:
    """What the generation loop needs, built once (see :func:`_setup`)."""

    cfg: DictConfig
    trainer: MetaTrainer
    step: Any
    run_dir: Path
    resuming: bool
    main: bool
    lopt_eval: Any
    adam_eval: Any
    eval_key: jax.Array
    theta0: Any
    logger: RunLogger | None = None
    ckpt: Checkpointer | None = None
    adam: Any = None  # Adam's EvalCurves on the evaluation tasks (host arrays)


def validation_evaluator(cfg: DictConfig, trainer: MetaTrainer, lopt: Any = None) -> tuple[Any, jax.Array]:
    """``(evaluate, key)``: what a run logs as ``meta_loss/*`` for ``lopt`` (default: the run's arch), i.e.
    ``evaluate(theta, key)`` on the run's fixed validation tasks of its plain (un-augmented) family, scored by
    the meta-loss members are scored on (``unroll.meta_loss``)."""
    plain, ev, u = trainer.family.unaugmented or trainer.family, cfg.evaluation, trainer.unroll_cfg
    args = (ev.num_tasks, ev.steps, u.loss_clip, u.meta_loss, u.meta_weight, u.valid_share)
    args += (trainer.cpu_reassociate, trainer.cpu_vector_width)
    key = jax.random.fold_in(jax.random.key(cfg.seed), 2)  # the same validation tasks every time
    return make_curve_evaluator(plain, trainer.lopt if lopt is None else lopt, *args), key


def _setup(cfg: DictConfig) -> _Run:
    """Build and compile everything, checking it fits, before anything is written."""
    check_values(cfg)
    trainer, theta0 = build(cfg)
    run_dir, resuming = prepare_run_dir(cfg)
    plain = trainer.family.unaugmented or trainer.family  # users train un-reparameterised models
    if not resuming:  # a family the arch learns nothing on is refused once, before the run starts
        check_learnable(trainer.lopt, plain, theta0, group_config(cfg, "arch")[1])
    lopt_eval, eval_key = validation_evaluator(cfg, trainer)
    adam_eval, _ = validation_evaluator(cfg, trainer, baseline("adam", cfg.evaluation.adam_lr))
    abstract = trainer.abstract_init(jax.random.fold_in(jax.random.key(cfg.seed), 1), theta0)
    try:  # trace everything once before touching the disk: a bad option fails here, cleanly
        jax.eval_shape(trainer.step, abstract)
        jax.eval_shape(lopt_eval, theta0, eval_key)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the config does not give a valid training step: {str(e).splitlines()[0]}") from None
    trainer, step = plan_memory(trainer, abstract, cfg.member_chunks)
    main = distributed.is_main_process()
    return _Run(cfg, trainer, step, run_dir, resuming, main, lopt_eval, adam_eval, eval_key, theta0)


def _start(run: _Run) -> tuple[Any, int]:
    """The initial or restored state, the logger (metrics and events recovered), Adam's curves."""
    cfg = run.cfg
    state = run.trainer.init(jax.random.fold_in(jax.random.key(cfg.seed), 1), run.theta0)
    run.ckpt = Checkpointer(run.run_dir / "checkpoints", cfg.keep_checkpoints)
    if run.resuming:
        try:
            state = run.ckpt.restore_newest_valid(state, note=_stderr_line)
        except ValueError as e:
            raise ConfigError(f"{e}; move the checkpoints away to start afresh") from None
    start = int(state.generation)
    run.adam = jax.device_get(run.adam_eval({}, run.eval_key))
    run.logger = RunLogger(run.run_dir, cfg.generations, start, cfg.progress, write=run.main)
    run.logger.config_text(cfg)  # the config in TensorBoard's text tab
    if run.resuming:
        run.logger.note(f"resumed at generation {start} of {cfg.generations} from {run.run_dir / 'checkpoints'}")
    if jax.process_count() > 1:
        run.logger.note(f"distributed run: {distributed.describe()}")
    if run.trainer.member_chunks > 1:
        run.logger.note(f"training each device's members in {run.trainer.member_chunks} sequential chunks")
    return state, start


def _stderr_line(message: str) -> None:
    print(f"evolopt.train: {message}", file=sys.stderr)


def _export(run: _Run, state: Any, generation: int) -> None:
    theta = run.trainer.strategy.mean(state.strategy)  # on every process: a computation over the global mesh
    if not run.main:
        return
    arch_name, arch_cfg = group_config(run.cfg, "arch")
    fault("write:theta.npz")
    path = run.run_dir / "theta.npz"
    info = provenance(run.cfg, run.run_dir)  # task family, strategy, seed, versions, commit, evaluation
    save_theta_file(path, theta, arch_name, arch_cfg, generation=generation, **info)


def _eval_metrics(run: _Run, generation: int, evals: Any, curves_too: bool) -> dict[str, float]:
    """The mean theta's evaluation (already dispatched) next to Adam's, fetched now.

    ``meta_loss/{mean_theta,adam}`` are the means of the meta-loss curves (validation loss under
    ``unroll.meta_loss=valid``, weighted by ``unroll.meta_weight``); there the plain training-loss
    means come along as ``..._train``."""
    mine, adam = jax.device_get(evals), run.adam
    out = {"meta_loss/mean_theta": float(mine.weighted().mean()), "meta_loss/adam": float(adam.weighted().mean())}
    if mine.valid is not None or run.trainer.unroll_cfg.meta_weight != "uniform":  # the plain mean training loss
        out["meta_loss/mean_theta_train"] = float(mine.train.mean())
        out["meta_loss/adam_train"] = float(adam.train.mean())
    if curves_too:
        out |= {
            "eval/final_train_loss": float(mine.train[:, -1].mean()),
            "eval/adam_final_train_loss": float(adam.train[:, -1].mean()),
            "eval/valid_loss": float(mine.final_valid.mean()),
            "eval/adam_valid_loss": float(adam.final_valid.mean()),
        }
        curves = {"learned": mine.meta().mean(0), "adam": adam.meta().mean(0)}
        if mine.valid is not None:
            curves |= {"learned_train": mine.train.mean(0), "adam_train": adam.train.mean(0)}
        run.logger.curves(generation, curves)
    return out


def _log(run: _Run, done: int, metrics: Any, evals: Any, tick: float) -> float:
    """Fetch generation ``done``'s metrics (its successor may already be running) and log them.
    RunAborted if the mean theta is no longer finite (nothing of it is checkpointed)."""
    cfg = run.cfg
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.perf_counter()
    metrics["speed/generations_per_s"] = 1.0 / (now - tick)
    metrics["speed/member_steps_per_s"] = run.trainer.member_steps_per_generation / (now - tick)
    if evals is not None:
        every = cfg.evaluation.every
        metrics |= _eval_metrics(run, done, evals, curves_too=done % every == 0 or done == cfg.generations)
    if metrics["fitness/nonfinite_steps"] > 0:
        run.logger.note(
            f"generation {done}: {int(metrics['fitness/nonfinite_steps'])} inner steps diverged (NaN/inf), "
            "scored as worst"
        )
    run.logger.generation(done, metrics)
    if not math.isfinite(metrics["theta/norm"]):
        last = run.ckpt.latest()
        kept = f"the last finite checkpoint (generation {last}) and theta.npz are kept" if last else "no checkpoint yet"
        raise RunAborted(
            f"the mean theta became non-finite at generation {done} (theta/norm={metrics['theta/norm']}); "
            f"stopped, {kept}; try a smaller strategy learning rate or sigma"
        )
    fault("logged:generation")
    return now


def _stop_reason(run: _Run, stop: StopRequest, began: float) -> str | None:
    """Why the loop stops after this generation: the same answer on every process."""
    budget_s = 60.0 * float(run.cfg.get("time_budget_minutes", 0) or 0)
    code = 2 if stop.requested else 1 if budget_s > 0 and time.perf_counter() - began > budget_s else 0
    code = distributed.agree_max(code)
    return {0: None, 1: "time", 2: "signal"}[code]


def _generations(run: _Run, state: Any, start: int, stop: StopRequest) -> tuple[Any, int, str | None]:
    """Generations ``start+1 ..``: each is dispatched before the previous one's metrics are
    read, so the device never waits for the host's logging (numbers are unchanged)."""
    cfg, ev = run.cfg, run.cfg.evaluation
    pending, tick = None, time.perf_counter()
    began = tick
    for gen in range(start, cfg.generations):
        state, metrics = run.step(state)
        done = gen + 1
        due = done % ev.meta_loss_every == 0 or done == cfg.generations
        evals = run.lopt_eval(run.trainer.strategy.mean(state.strategy), run.eval_key) if due else None
        if pending is not None:
            tick = _log(run, *pending, tick)
        pending = (done, metrics, evals)
        reason = _stop_reason(run, stop, began)
        if done % cfg.checkpoint_every == 0 or done == cfg.generations or reason:
            tick = _log(run, *pending, tick)
            pending = None
            run.ckpt.save(done, state)
            _export(run, state, done)
        if reason:
            return state, done, reason
    return state, cfg.generations, None


def _finish(run: _Run, stop: StopRequest, reason: str | None, done: int) -> None:
    if reason == "time" and run.main:
        _stderr_line(
            f"time budget of {run.cfg.time_budget_minutes} min spent at generation {done}; "
            "run the same command again to continue"
        )
    if reason == "signal":
        signum = stop.signum or 15  # a process that was not signalled stops with the one that was
        raise RunAborted(f"stopped at generation {done}; the same command resumes", 128 + signum)


def meta_train(cfg: DictConfig) -> Path:
    """Run (or resume) the meta-training a config describes; return the run directory.

    Under ``jax.distributed`` every process calls this with the same config; the
    decisions about the run directory are taken by all before process 0 writes.
    Faults (README "Faults and resuming"): SIGTERM/SIGINT checkpoint and raise
    RunAborted; a full disk raises RunAborted; the same call then resumes.
    """
    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    cpu_devices.configure(cfg.get("cpu_devices", "auto"), [cfg.population_size])  # the CLI has set it already
    cache = compile_cache.configure(cfg.get("compile_cache", "auto"))  # before the first compile
    with StopRequest() as stop:
        run = _setup(cfg)
        lock = None
        try:
            lock, run.run_dir, run.resuming = open_run_dir(cfg, run.main)
            if run.main:  # what starts, before the first (slow) compilation
                devices = f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
                print(start_line(cfg, run.run_dir, run.resuming, devices, cache), file=sys.stderr, flush=True)
            state, start = _start(run)
            if start == 0:
                evals = run.lopt_eval(run.trainer.strategy.mean(state.strategy), run.eval_key)
                run.logger.record(0, _eval_metrics(run, 0, evals, curves_too=True))
            state, done, reason = _generations(run, state, start, stop)
            _close(run)
            if start >= cfg.generations:
                _export(run, state, start)
            if run.main:
                plot_run(run.run_dir, run.trainer.unroll_cfg.meta_loss, run.trainer.unroll_cfg.meta_weight)
            _finish(run, stop, reason, done)
        except Exception as e:
            _close(run, quiet=True)
            aborted = disk_full(run.run_dir, run.main, e)
            if aborted is None:
                raise
            raise aborted from None
        finally:
            if lock is not None:
                lock.release()
    return run.run_dir


def _close(run: _Run, quiet: bool = False) -> None:
    for part in (run.logger, run.ckpt):
        try:
            if part is not None:
                part.close()
        except Exception:
            if not quiet:
                raise
    run.logger = run.ckpt = None


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
    template = trainer.init(jax.random.key(0), theta0)
    if generation is None:  # a damaged newest checkpoint: say so and export the newest that restores
        try:
            state = ckpt.restore_newest_valid(template, note=_stderr_line, set_aside=False)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        state = ckpt.restore(template, generation)
    ckpt.close()
    arch_name, arch_cfg = group_config(cfg, "arch")
    out = run_dir / "theta.npz" if out is None else Path(out)
    gen = int(state.generation)
    info = provenance(cfg, run_dir)  # usability: see evolopt/provenance.py
    return save_theta_file(out, trainer.strategy.mean(state.strategy), arch_name, arch_cfg, generation=gen, **info)
