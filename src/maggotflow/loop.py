"""The skeleton every training loop shares (pretraining, fine-tuning).

Both loops (`maggotflow.pretraining.pretrain`, `maggotflow.training.train_tagger`) read
top to bottom: seed, build the model, then step, validate every N steps, keep the best
validated state. The pieces that are the same in both live here:

- `seeded(device, seed)`: the block runs with torch's global RNG seeded (the caller's
  state is restored afterwards) and deterministic kernels on CPU, so the same seed on the
  same machine and torch build gives identical weights.
- `MixedPrecision`: float16 autocast + gradient scaling on CUDA (plain float32 elsewhere)
  and the optimiser step: backward, gradient-norm clip, step; a non-finite loss is
  skipped (a diverging batch must not poison the weights).
- `Progress`: the running training loss between validations, the curve (one row per
  validation), the best validated state (module state dicts copied to CPU: `snapshot`) and the
  progress line `step N/T ... train <loss> <scores> (<rate> steps/s, ETA <duration>)`;
  every step also a progress record (`maggotflow.progress`: a workflow job shows them on its
  console). `duration_text` (from `maggotflow.progress`): '8.5 s', '12.3 min', '2.1 h'.
- `evaluating(*modules)`: the block runs the modules in eval mode (each one's previous mode
  restored afterwards): every validation.
- `validation_due(step, eval_every, last)`: validate every `eval_every` steps and after the
  last step (of a stage, for fine-tuning).
- `run_provenance(device, precision, progress)`: how the loop ran, for provenance.json.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from maggotflow import progress as progress_records
from maggotflow.progress import duration_text  # also the loops' own (pretraining, training)


@contextlib.contextmanager
def seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Seed torch's global RNG for the block and restore the caller's afterwards; on CPU
    deterministic kernels for the block too (the caller's setting restored)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            torch.manual_seed(seed)
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@contextlib.contextmanager
def evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """Run the block with the modules in eval mode (dropout off, BatchNorm running statistics
    used, not updated); each module's previous mode is restored afterwards."""
    was = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, was):
            module.train(mode)


def validation_due(step: int, eval_every: int, last: bool) -> bool:
    """Whether a loop validates after `step` steps: every `eval_every` steps and after the
    `last` one (the end of the loop or of a stage)."""
    return step % eval_every == 0 or last


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's state dict on the CPU (later steps do not change it)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def run_provenance(device: torch.device, precision: MixedPrecision, progress: Progress) -> dict:
    """How a loop ran (for the model's provenance.json): skipped steps, device, mixed
    precision, torch version and threads."""
    return {
        "skipped_batches": progress.skipped,
        "device": str(device),
        "mixed_precision": precision.enabled,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


class MixedPrecision:
    """float16 autocast + gradient scaling on CUDA when `enabled`; float32 everywhere else."""

    def __init__(self, device: torch.device, enabled: bool = True):
        self.device = device
        self.enabled = device.type == "cuda" and enabled
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled)

    def describe(self) -> str:
        """Where the loop runs, for its first log line: 'cpu', 'cuda:0 (mixed precision)'."""
        return f"{self.device}{' (mixed precision)' if self.enabled else ''}"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of a forward pass."""
        return torch.autocast("cuda", dtype=torch.float16) if self.enabled else contextlib.nullcontext()

    def step(self, optimiser: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.nn.Parameter],
             grad_clip: float) -> bool:
        """Backward, clip the global gradient norm to `grad_clip`, step; False (and no
        change to the weights) when the loss is not finite."""
        optimiser.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return False
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimiser)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(optimiser)
        self.scaler.update()
        return True


class Progress:
    """Training losses, validation curve, best validated state and progress lines of a loop.

    modules: whose states are kept at the best validation. total_steps: for the line and
    the ETA. better(scores, best): whether new validation scores beat the best so far.
    describe(scores): the scores in a progress line. log: where lines go.
    """

    def __init__(self, modules: tuple[torch.nn.Module, ...], total_steps: int,
                 better: Callable[[dict, dict], bool], describe: Callable[[dict], str],
                 log: Callable[[str], None]):
        self.modules = modules
        self.total_steps = total_steps
        self.better = better
        self.describe = describe
        self.log = log
        self.curve: list[dict] = []  # one row per validation: step, [stage,] train_loss, scores
        self.best: dict = {}  # step, [stage,] scores of the best validation
        self.best_state: list[dict[str, torch.Tensor]] = []
        self.skipped = 0  # steps with a non-finite loss
        self._loss_sum, self._n_losses = 0.0, 0
        self._steps = 0  # steps taken (for the progress records)
        self._t0 = time.perf_counter()

    def start(self, scores: dict, stage: str | None = None) -> None:
        """The validation before training (step 0): the first best; the clock starts."""
        self._keep(self._row(0, stage, scores))
        self._line(0, f"step 0/{self.total_steps} {self.describe(scores)}")
        self._t0 = time.perf_counter()

    def train_step(self, loss: torch.Tensor, stepped: bool) -> None:
        """One optimisation step: its loss, or (stepped False) one skipped step."""
        if stepped:
            self._loss_sum += float(loss.detach())
            self._n_losses += 1
        else:
            self.skipped += 1
        self._steps += 1
        if progress_records.enabled():
            step, rate = self._steps, self._steps / max(time.perf_counter() - self._t0, 1e-9)
            loss = f", train loss {self._loss_sum / self._n_losses:.4g}" if self._n_losses else ""
            progress_records.report(step, self.total_steps, "step %d/%d (%d%%)%s, ETA %s", step, self.total_steps,
                                    100 * step // max(self.total_steps, 1), loss,
                                    duration_text((self.total_steps - step) / rate))

    def validated(self, step: int, scores: dict, stage: str | None = None) -> None:
        """A validation after `step` steps: a curve row, the best state if better, a line."""
        row = self._row(step, stage, scores)
        if self.better(scores, self.best):
            self._keep(row)
        train_loss = row["train_loss"]
        rate = step / (time.perf_counter() - self._t0)
        self._line(step, f"step {step}/{self.total_steps}{'' if stage is None else f' ({stage})'} "
                   f"train {'nan' if train_loss is None else f'{train_loss:.4g}'} {self.describe(scores)} "
                   f"({rate:.1f} steps/s, ETA {duration_text((self.total_steps - step) / rate)})"
                   + (f" [{self.skipped} non-finite batches skipped]" if self.skipped else ""))

    def _line(self, step: int, text: str) -> None:
        """A progress line: to `log`, and as a progress record (the console of a job)."""
        self.log(text)
        progress_records.report(step, self.total_steps, "%s", text)

    @property
    def elapsed(self) -> float:
        """Seconds since the validation before training."""
        return time.perf_counter() - self._t0

    def restore_best(self) -> None:
        """Load the best validated states back into the modules."""
        for module, state in zip(self.modules, self.best_state):
            module.load_state_dict(state)

    def _row(self, step: int, stage: str | None, scores: dict) -> dict:
        """The curve row of a validation; the training loss is the mean since the last one."""
        train_loss = self._loss_sum / self._n_losses if self._n_losses else None
        self._loss_sum, self._n_losses = 0.0, 0
        row = {"step": step} | ({} if stage is None else {"stage": stage}) | {"train_loss": train_loss} | scores
        self.curve.append(row)
        return row

    def _keep(self, row: dict) -> None:
        self.best = {k: v for k, v in row.items() if k != "train_loss"}
        self.best_state = [snapshot(m) for m in self.modules]
