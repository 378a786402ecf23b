"""The SOO fine-tuning run: load, shard, train with progress and checkpoints, export, evaluate.

Every step's batch is a pure function of (seed, step), and dropout keys are too, so a run
resumed from its latest checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from flax import nnx

from soo_jax import run_dir
from soo_jax.data.batching import PairBatch, batch_pairs
from soo_jax.data.pairs import PromptPair, batch_indices, steps_per_epoch, training_pairs
from soo_jax.lora import apply_lora
from soo_jax.models.loader import from_pretrained, load_config, load_tokenizer, resolve_model_path
from soo_jax.peft_io import export_peft_adapter
from soo_jax.sharding import DEFAULT_RULES
from soo_jax.train import config as run_config
from soo_jax.train.checkpoint import TrainCheckpointer, abstract_like, lora_config_to_json
from soo_jax.train.mesh import (MeshConfig, check_global_batch, global_batch_from_host_slices, initialize_distributed,
                                make_mesh, process_batch_rows)
from soo_jax.train.metrics_log import MetricsLog
from soo_jax.train.step import (SplitModel, init_train_state, jit_train_step, make_optimizer, make_train_step,
                                plan_shardings)


@dataclasses.dataclass
class RunResult:
    out_dir: pathlib.Path
    checkpoint_dir: pathlib.Path
    metrics_file: pathlib.Path
    adapter_dir: pathlib.Path | None
    first_soo: float | None
    last_soo: float | None
    steps: int
    resumed_from: int | None
    evaluation: dict | None = None


class Schedule:
    """Which pairs form optimizer step k: epoch = k // steps_per_epoch, then a slice of that
    epoch's seeded permutation (the last incomplete batch of an epoch is dropped so every step
    has the same shape and one compiled step serves the whole run)."""

    def __init__(self, num_pairs: int, batch_size: int, grad_accum: int, epochs: int, seed: int):
        self.num_pairs, self.batch_size, self.grad_accum, self.seed = num_pairs, batch_size, grad_accum, seed
        self.steps_per_epoch = steps_per_epoch(num_pairs, batch_size, drop_remainder=True)
        if self.steps_per_epoch == 0:
            raise ValueError(f"config.train.batch_size: {batch_size} exceeds the {num_pairs} training pairs; "
                             f"use at most {num_pairs}")
        self.total_steps = epochs * self.steps_per_epoch

    @classmethod
    def of(cls, num_pairs: int, t: run_config.TrainConfig) -> "Schedule":
        return cls(num_pairs, t.batch_size, t.grad_accum, t.epochs, t.seed)

    def position(self, step: int) -> tuple[int, int]:
        return divmod(step, self.steps_per_epoch)

    def pair_indices(self, step: int) -> np.ndarray:
        epoch, index = self.position(step)
        return batch_indices(self.num_pairs, self.batch_size, epoch, index, self.seed, drop_remainder=True)

    def microbatches(self, pairs: PairBatch, step: int, rows: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """tokens/mask [grad_accum, 2 * micro, T], each microbatch interleaved [self_0, other_0, ...]
        as `pairs` is.

        `rows` keeps only those rows of each microbatch (this process's share, multi-host loading).
        """
        idx = self.pair_indices(step).reshape(self.grad_accum, -1)
        rows_of = pairs.rows_of(idx)
        if rows is not None:
            rows_of = rows_of[:, rows]
        return pairs.tokens[rows_of], pairs.mask[rows_of]


def tokenize_pairs(tokenizer, pairs: list[PromptPair], data: run_config.DataSettings) -> PairBatch:
    return batch_pairs(tokenizer, pairs, use_chat_template=data.chat_template, max_length=data.max_length,
                       pad_to_multiple_of=data.pad_to_multiple_of)


def _is_main_process() -> bool:
    return jax.process_index() == 0


def _say(message: str) -> None:
    if _is_main_process():
        run_dir.say(message)


FRESH_HINT = "a new train.out_dir, or --fresh to move the old run aside"


def train_settings(c: ml_collections.ConfigDict, model_path: pathlib.Path) -> dict:
    """The flat settings the trained adapter depends on (compared on every rerun): all but those
    that change no result and the evaluation section (the adapter does not depend on it)."""
    settings = run_dir.without(run_dir.flatten(c.to_dict()), (*run_config.NOT_RESULT_CHANGING, "eval"))
    return {**settings, "model.identity": run_dir.model_identity(model_path)}


def _remove_orphans(out_dir: pathlib.Path) -> None:
    """Temporary directories a killed run left behind (an adapter export or a checkpoint being
    written); nobody else writes here while we hold the lock."""
    import shutil

    for orphan in [*out_dir.glob(".adapter.*"), *(out_dir / "checkpoints").glob("*.orbax-checkpoint-tmp*")]:
        shutil.rmtree(orphan, ignore_errors=True)


def run_training(c: ml_collections.ConfigDict, *, evaluate: Callable | None = None,
                 stop_after: int | None = None, fresh: bool = False,
                 resume_from_previous: bool = False) -> RunResult:
    """Runs (or resumes) the SOO fine-tuning described by config `c`.

    `train.out_dir` is claimed first (`soo_jax.run_dir.claim`): a rerun there with other
    result-changing settings is refused naming each key, unless `fresh` (the old run is moved
    aside); a second process is refused while the first runs. `stop_after` ends the run early
    after that many steps in this invocation (used to simulate an interruption);
    `evaluate(tuned_model, tokenizer, c) -> dict` runs at the end if given and `train.evaluate`
    is set; its result goes to `before_after.json` (and its "summary" is printed), and a rerun of
    a finished run reuses it while the evaluation settings are the same. SIGINT/SIGTERM end the
    run after the current step with a checkpoint (`run_dir.Interrupted`). A latest checkpoint
    that cannot be read stops the run, unless `resume_from_previous` (then it is moved aside
    and the newest readable step is used).
    """
    run_config.validate(c)
    t = run_config.train_config(c)
    initialize_distributed()
    out_dir = pathlib.Path(t.out_dir).absolute()
    model_path = resolve_model_path(run_config.model_settings(c).path)
    check_before_claim(c, model_path)
    with run_dir.claim(out_dir, train_settings(c, model_path), kind="train", fresh=fresh, fresh_hint=FRESH_HINT,
                       info={"model": str(model_path)}, enabled=_is_main_process()):
        if _is_main_process():
            _remove_orphans(out_dir)
        return _train(c, t, out_dir, model_path, evaluate=evaluate, stop_after=stop_after,
                      resume_from_previous=resume_from_previous)


def check_before_claim(c: ml_collections.ConfigDict, model_path: pathlib.Path) -> None:
    """What `run_config.validate` cannot check alone, checked before the run directory is claimed
    (a run refused here leaves it as it was): layer indices against the model's config.json (read
    alone, no weights), the mesh against the devices, the batch against the training pairs."""
    run_config.validate_for_model(c, load_config(model_path).num_layers)
    try:
        mesh = make_mesh(_mesh_config(c))
    except ValueError as err:
        raise ValueError(f"config.mesh: {err}") from None
    schedule = Schedule.of(len(training_pairs(run_config.data_settings(c).pairing)), run_config.train_config(c))
    try:
        check_global_batch(mesh, schedule.batch_size // schedule.grad_accum)
    except ValueError as err:
        raise ValueError(f"config.train.batch_size / config.train.grad_accum / config.mesh: {err}") from None


def _mesh_config(c: ml_collections.ConfigDict) -> MeshConfig:
    return MeshConfig(data=int(c.mesh.data), fsdp=int(c.mesh.fsdp), tensor=int(c.mesh.tensor))


def _train(c: ml_collections.ConfigDict, t: run_config.TrainConfig, out_dir: pathlib.Path, model_path: pathlib.Path,
           *, evaluate: Callable | None, stop_after: int | None, resume_from_previous: bool) -> RunResult:
    mesh = make_mesh(_mesh_config(c))
    _say(f"model: {model_path}\nmesh: {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} "
         f"device(s), {jax.process_count()} process(es)")

    settings, data = run_config.model_settings(c), run_config.data_settings(c)
    model = from_pretrained(model_path, dtype=settings.dtype, param_dtype=settings.param_dtype or None, mesh=mesh,
                            rules=DEFAULT_RULES, progress=_is_main_process(),
                            scan_layers=settings.scan_layers, remat=settings.remat)
    lora_cfg = run_config.lora_config(c)
    loss_cfg = run_config.loss_config(c)
    apply_lora(model, lora_cfg, rngs=nnx.Rngs(params=t.seed, dropout=t.seed))

    tokenizer = load_tokenizer(model_path)
    pairs = tokenize_pairs(tokenizer, training_pairs(data.pairing), data)
    schedule = Schedule.of(pairs.num_pairs, t)
    micro_pairs = schedule.batch_size // schedule.grad_accum
    check_global_batch(mesh, micro_pairs)
    optimizer = make_optimizer(run_config.optimizer_config(c, schedule.total_steps))
    split = SplitModel(model)
    shardings = plan_shardings(split, optimizer, mesh)
    state = jax.device_put(init_train_state(split, optimizer, dropout_seed=t.seed), shardings.state)
    step_fn = jit_train_step(make_train_step(split, loss_cfg, optimizer), shardings)

    checkpointer = TrainCheckpointer(out_dir / "checkpoints", save_every=t.checkpoint_every,
                                     max_to_keep=t.max_to_keep)
    resumed_from = checkpointer.latest_step()
    if resumed_from is not None:
        state, meta = checkpointer.restore(abstract_like(state, shardings.state),
                                           fall_back_to_previous=resume_from_previous)
        resumed_from = int(state.step)
        _check_resumable(meta, t, lora_cfg)
        _say(f"resuming from checkpoint step {resumed_from} (epoch {meta['epoch']}, batch {meta['batch_in_epoch']})")
    start = int(state.step)

    def meta_for(step: int) -> dict:
        epoch, index = schedule.position(step)
        return {"step": step, "epoch": epoch, "batch_in_epoch": index, "pairs_seen": step * schedule.batch_size,
                "data_seed": t.seed, "dropout_seed": t.seed,
                "lora_config": lora_config_to_json(lora_cfg), "model_path": str(model_path),
                "config": json.loads(c.to_json_best_effort())}

    global_shape = (schedule.grad_accum, 2 * micro_pairs, pairs.tokens.shape[1])
    rows = process_batch_rows(shardings.batch, global_shape) if jax.process_count() > 1 else None
    # Records past the restored step were written by the interrupted run and are re-made now.
    log = MetricsLog(out_dir / "metrics.jsonl", enabled=_is_main_process(), tensorboard_dir=out_dir / "tensorboard",
                     keep_through_step=start)
    first_soo = last_soo = None
    first_loss = last_loss = None
    end = schedule.total_steps if stop_after is None else min(schedule.total_steps, start + stop_after)
    if start < end:
        _say(f"training {end - start} steps (the first step compiles first)")
    progress = log.progress(total=schedule.total_steps, initial=start)
    started = time.perf_counter()
    tokens_done = 0
    stop = run_dir.StopRequest()
    try:
        with jax.set_mesh(mesh), stop:  # activation sharding constraints read the ambient mesh
            for step in range(start, end):
                local_tokens, local_mask = schedule.microbatches(pairs, step, rows)
                tokens, mask = global_batch_from_host_slices(local_tokens, local_mask, shardings.batch)
                state, metrics = step_fn(split.frozen, state, tokens, mask)
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not metrics.pop("finite"):
                    last_good = checkpointer.latest_step()
                    raise FloatingPointError(
                        f"non-finite loss or gradient at step {step + 1} (loss={metrics['loss']}, "
                        f"grad_norm={metrics['grad_norm']}); the update was not applied. Last good checkpoint: "
                        f"{checkpointer.path_of(last_good) if last_good is not None else 'none'}")
                # Real tokens of the global batch (estimated from this process's share on several hosts).
                tokens_done += int(local_mask.sum()) * global_shape[1] // local_mask.shape[1]
                elapsed = time.perf_counter() - started
                epoch, _ = schedule.position(step)
                record = {"step": step + 1, "epoch": epoch, **metrics, "tokens_per_s": tokens_done / max(elapsed, 1e-9)}
                first_soo = metrics["soo"] if first_soo is None else first_soo
                last_soo = metrics["soo"]
                first_loss = metrics["loss"] if first_loss is None else first_loss
                last_loss = metrics["loss"]
                log.write(record, progress)
                checkpointer.save(step + 1, state, meta_for(step + 1))
                if stop:
                    break
        checkpointer.save(int(state.step), state, meta_for(int(state.step)), force=True)
    finally:
        progress.close()
        checkpointer.wait()
        log.close()

    if stop:
        checkpointer.close()
        raise stop.interrupted(f"interrupted at step {int(state.step)}/{schedule.total_steps}; checkpoint "
                               f"{checkpointer.path_of(int(state.step))} written; rerun the same command to resume")
    if first_loss is not None and abs(last_loss) > LOSS_BLOWUP * max(abs(first_loss), 1e-12):
        _say(f"warning: the loss grew from {first_loss:.4g} (first step of this run) to {last_loss:.4g} (last); "
             f"training probably diverged: try a lower optimizer.learning_rate")
    adapter_dir = None
    evaluation = None
    finished = int(state.step) == schedule.total_steps
    if finished:
        nnx.update(model, split.lora_state(jax.device_get(state.lora)))
        if t.export_adapter and _is_main_process():
            adapter_dir = export_peft_adapter(model, lora_cfg, out_dir / "adapter", base_model=str(model_path))
        if evaluate is not None and t.evaluate and _is_main_process():
            evaluation = _before_after(evaluate, model, tokenizer, c, out_dir, int(state.step))
    checkpointer.close()
    result = RunResult(out_dir=out_dir, checkpoint_dir=checkpointer.directory, metrics_file=log.path,
                       adapter_dir=adapter_dir, first_soo=first_soo, last_soo=last_soo, steps=int(state.step),
                       resumed_from=resumed_from, evaluation=evaluation)
    _report(result, schedule.total_steps)
    return result


LOSS_BLOWUP = 100.0  # last/first loss ratio above which a finished run warns


def evaluation_settings(c: ml_collections.ConfigDict, trained_steps: int) -> dict:
    """What before_after.json depends on beyond the adapter (fixed by the run's manifest)."""
    return {**run_dir.flatten({"eval": c.eval.to_dict()}),
            "train.eval_scenarios": run_config.train_config(c).eval_scenarios, "trained_steps": trained_steps}


def _before_after(evaluate: Callable, model, tokenizer, c: ml_collections.ConfigDict, out_dir: pathlib.Path,
                  trained_steps: int) -> dict:
    """The end-of-run evaluation, or the stored one when the adapter and its settings are the same."""
    path = out_dir / "before_after.json"
    settings = run_dir.flatten(evaluation_settings(c, trained_steps))
    if path.is_file():
        stored = run_dir.read_json(path)
        if stored.get("settings") == settings:
            _say(f"before/after evaluation: reusing {path} (same adapter, same evaluation settings)")
            return stored
    n = run_config.train_config(c).eval_scenarios
    _say(f"before/after evaluation: forced choice on {n} held-out scenarios x 2 room orders, base model then "
         f"tuned, and the latent SOO at the training site")
    evaluation = {**evaluate(model, tokenizer, c), "settings": settings}
    run_dir.atomic_write_json(path, evaluation)
    return evaluation


def _check_resumable(meta: dict, t: run_config.TrainConfig, lora_cfg) -> None:
    if meta.get("lora_config") != lora_config_to_json(lora_cfg):
        raise ValueError(f"the checkpoint in {t.out_dir} was written with LoRA config {meta.get('lora_config')}, "
                         f"not {lora_config_to_json(lora_cfg)}; use another train.out_dir")
    if meta.get("data_seed") != t.seed:
        raise ValueError(f"the checkpoint in {t.out_dir} used seed {meta.get('data_seed')}, not {t.seed}")


def _report(result: RunResult, total_steps: int) -> None:
    lines = [f"steps: {result.steps}/{total_steps}"
             + (f" (resumed from {result.resumed_from})" if result.resumed_from is not None else "")]
    if result.first_soo is not None:
        lines.append(f"SOO loss: first step of this run {result.first_soo:.6g} -> last {result.last_soo:.6g}")
    lines += [f"checkpoints: {result.checkpoint_dir}", f"metrics: {result.metrics_file}"]
    if result.adapter_dir is not None:
        lines.append(f"PEFT adapter: {result.adapter_dir}")
    if result.evaluation is not None:
        lines.append(f"before/after evaluation: {result.out_dir / 'before_after.json'}")
        if "summary" in result.evaluation:
            lines.append(result.evaluation["summary"])
    _say("\n".join(lines))
