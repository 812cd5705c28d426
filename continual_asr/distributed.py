"""Devices and many processes: ``--device``, mixed precision and data-parallel training.

One process per device (a GPU, or a share of the CPU cores), launched by torchrun
(``torchrun --nproc-per-node N [--nnodes M ...] -m continual_asr run ...``) or by
``casr run --nproc N``, which runs its own command line again as N processes through torch's
elastic launcher on this machine. Every process (rank) holds the whole model and the whole data;
the backend is gloo on the CPU and NCCL on GPUs. With one process nothing here does anything.

How a run stays the single-process run, batch for batch (up to floating-point rounding):

- **Batches.** Every rank builds the same length-bucketed plan (FrameBudgetBatchSampler, same
  seed, so the same global batches in the same order) and takes its contiguous part of each
  global batch (:class:`~continual_asr.data.dataset.ShardedBatchSampler`), padded to the
  global batch's longest utterance: every utterance sees exactly the input it would see in one
  process, every rank runs the same number of steps. ``batch_frames`` stays the global batch:
  learning rates and schedules mean the same whatever the number of processes; raise it to give
  each GPU more work.
- **Gradients.** The loss is a mean over a batch's utterances; each rank backpropagates its
  loss times its share of the global batch's utterances, and the gradients are summed over the
  ranks (one all-reduce of a flat buffer) before clipping and the optimizer step, so every rank
  applies the gradient of the whole batch's mean loss. The model is not wrapped in
  DistributedDataParallel: adapters join per task, combiners are swapped per phase and what
  trains changes per phase, which a manual all-reduce after backward handles without DDP's
  bookkeeping (no find_unused_parameters, no rebuilding the wrapper). A parameter no rank used
  keeps no gradient, as in one process. Weights are broadcast from rank 0 at the start of every
  training phase and after every experience (what some ranks may compute on their own, the
  router's fit, never drifts).
- **Batch statistics.** BatchNorm (in the Conformer's convolution module) normalises with the
  global batch's statistics in training (:class:`SyncedBatchNorm`, gloo and NCCL alike), and
  combiners calibrate their LayerNorm gain on the global batch (:func:`global_mean`).
- **Evaluation** is sharded the same way; hypotheses and references are gathered (by position
  in the test set) before the WER, so the WER matrix is the single-process one.
- **Files.** Only rank 0 writes: run folder, log, checkpoints, TensorBoard, caches. Data is
  prepared on rank 0 first, then on each other node's first process, then everywhere else (by
  then from the cache). Base pretraining runs data-parallel like every other training; rank 0
  alone decides whether the cached base model exists and broadcasts its weights, so other
  nodes need no shared cache folder.

Not quite batch for batch: LwF's distillation term (a mean over frames) is weighted by
utterances like the loss, and a stand-in utterance (a rank left without one by a batch of fewer
utterances than ranks) counts in that batch's BatchNorm statistics and calibration, though in no
loss and no WER.

A rank that fails (an error, a non-finite loss on its part of a batch) exits; torchrun then
stops the others. Finished steps are kept, as in one process. The first rank to stop with a
casr error says so in one line (:func:`first_to_fail`); the others, whose collectives then break,
see that it did (:func:`peer_failed`) and end quietly with the same status.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import sys
import uuid
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .errors import STOPPED_HINT, CasrError

# Rank 0 may synthesize a stream or pretrain while the others wait at a barrier.
TIMEOUT = datetime.timedelta(hours=6)
_cpu_group = None  # a gloo group for objects and barriers (the default group under NCCL holds GPU tensors)


# ---- who am I ----------------------------------------------------------------------------------
def launched() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 (also before the process group exists): the one process that writes and logs."""
    return rank() == 0


# ---- devices -----------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``auto`` (a GPU if torch sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Under torchrun, ``cuda`` is the GPU of the process's LOCAL_RANK. A GPU asked for and not
    there is a one-line error.
    """
    text = (name or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text != "cuda" and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise CasrError(f"--device must be auto, cpu or cuda (or cuda:N), got '{name}'")
    if not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise CasrError(f"--device {name}: torch {torch.__version__} ({built}) sees no CUDA GPU; "
                        "use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if launched():
        if text != "cuda":
            raise CasrError(f"--device {name}: under torchrun give --device cuda; each process takes the GPU "
                            "of its LOCAL_RANK")
        index = local_rank()
        if index >= count:
            raise CasrError(f"process {rank()} (local rank {index}) has no GPU of its own: {count} visible on "
                            "this machine; start at most that many processes per node")
        return torch.device("cuda", index)
    index = int(text[5:]) if ":" in text else 0
    if index >= count:
        raise CasrError(f"--device {name}: only {count} CUDA GPU(s) visible")
    return torch.device("cuda", index)


def has_amx() -> bool:
    """Whether the CPU has AMX tiles (Intel Sapphire Rapids and later), where oneDNN runs bf16
    matrix products on matrix units."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def cpu_bf16(cpu_precision: str) -> bool:
    """Whether a CPU run computes under bf16 autocast: ``bf16`` always, ``auto`` where the CPU
    has AMX (the only CPUs where it measured faster: docs/performance.md), ``float32`` never."""
    return resolve_cpu_precision(torch.device("cpu"), cpu_precision) == "bf16"


def resolve_cpu_precision(device: torch.device, cpu_precision: str) -> str:
    """``auto`` made concrete for a run on ``device``, so results, resume and caches record what
    ran: bf16 on a CPU with AMX, float32 on other CPUs and on a GPU (which reads ``mixed_precision``)."""
    if cpu_precision != "auto":
        return cpu_precision
    return "bf16" if device.type == "cpu" and has_amx() else "float32"


# bf16 matrix products on the CPU run oneDNN kernels compiled for each shape; casr's batches have
# about 130 shapes over a pretraining, a few hundred kernels. 64 cached primitives (casr's default,
# for float32's memory) made a bf16 pretraining epoch 1.6x slower than 256 (docs/performance.md).
BF16_PRIMITIVE_CACHE = 256


def size_primitive_cache(cpu_precision: str) -> None:
    """Raise oneDNN's primitive cache to ``BF16_PRIMITIVE_CACHE`` for a bf16 run on the CPU, unless
    the user set its size. oneDNN reads the variable when it builds its first primitive, so this
    acts when called before any model runs in the process (the CLI's runs and pretraining)."""
    import continual_asr

    if cpu_precision == "bf16" and not continual_asr.ONEDNN_CACHE_SET_BY_USER:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(BF16_PRIMITIVE_CACHE)


def prepare_cpu_precision(device: torch.device, cpu_precision: str) -> str:
    """``resolve_cpu_precision``, then ``size_primitive_cache`` for what it resolved to: what a run
    and a pretraining call once, before their first model, so results and cache keys record the
    arithmetic that ran and a bf16 run has its larger cache. The resolving itself stays free of
    side effects for callers that only ask."""
    resolved = resolve_cpu_precision(device, cpu_precision)
    size_primitive_cache(resolved)
    return resolved


def autocast(device: torch.device, enabled: bool = True, cpu_precision: str = "float32"):
    """bf16 autocast of forward and loss (the losses compute in float32 themselves): on a GPU
    when ``enabled`` (``mixed_precision``), on the CPU as ``cpu_precision`` says."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
    if device.type == "cpu" and cpu_bf16(cpu_precision):
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def arithmetic(device: torch.device, enabled: bool = True, cpu_precision: str = "float32") -> str:
    """What a run computes in, for its log: the precision ``autocast`` gives, and on the CPU its
    vector extensions and threads (float sums, so WERs, depend on both)."""
    if device.type == "cuda":
        return f"{device}, " + ("bf16 autocast (forward and loss), float32 weights" if enabled else "float32")
    units = " with AMX" if has_amx() else ""
    where = f"cpu ({torch.backends.cpu.get_cpu_capability()}{units}, {torch.get_num_threads()} threads)"
    if cpu_bf16(cpu_precision):
        return f"{where}, bf16 autocast (forward and loss; attention, depthwise convolutions and weights in float32), cpu_precision={cpu_precision}"
    return f"{where}, float32, cpu_precision={cpu_precision}"


def loader_workers(configured: int, device: torch.device) -> int:
    """DataLoader worker processes: ``configured``, or with -1 (auto) none on the CPU (the
    batches are in memory; workers would only compete with training for the cores) and a few
    per process on a GPU, so batches are collated and pinned while the GPU computes."""
    if configured >= 0:
        return configured
    if device.type != "cuda":
        return 0
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(4, (os.cpu_count() or 2) // per_node - 1))


# ---- the process group -------------------------------------------------------------------------
def init(device: torch.device) -> bool:
    """Join the process group torchrun describes (env:// rendezvous); True when there are
    several processes. NCCL for GPUs, gloo for the CPU; a gloo side group carries objects."""
    global _cpu_group
    if not launched():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    _cpu_group = dist.new_group(backend="gloo", timeout=TIMEOUT) if dist.get_backend() != "gloo" else None
    return is_active()


def launch_local(nproc: int, args: Sequence[str]) -> int:
    """``casr ARGS`` as ``nproc`` processes on this machine (torchrun's --standalone rendezvous);
    their exit status. The processes are forked from the worker server, which has imported casr
    already (continual_asr/worker_server.py), so none of them spends its first seconds importing.
    The failing process has said why in one line, so the launcher's own failure report and log
    lines stay out of the way."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from .worker_server import worker_context

    for name in [*logging.root.manager.loggerDict, "torch.multiprocessing.spawn"]:
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing.spawn")):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # each has its own level
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: one thread a process unless told
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          start_method=worker_context().get_start_method())
    try:
        elastic_launch(config, entrypoint=run_rank)(list(args))
    except ChildFailedError as exc:
        _, root = exc.get_first_failure()
        return root.exitcode if root.exitcode > 0 else 1
    except SignalException as exc:  # the launcher passed the signal on to the processes
        if exc.sigval != signal.SIGINT:  # on Ctrl-C process 0 has said so itself
            print(f"casr: stopped by {exc.sigval.name}; {STOPPED_HINT}", file=sys.stderr)
        return 128 + exc.sigval
    return 0


def run_rank(args: list[str]) -> None:
    """One process of :func:`launch_local`: the command line ``casr ARGS``, exiting with its status.
    Forked from a server that imported torch before this process's environment was set, so the
    thread count torchrun asks for is applied here."""
    from .cli import main
    from .worker_server import thread_lock_for_progress_bars

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    thread_lock_for_progress_bars()

    main.main(list(args), prog_name="casr")


_FAILED_KEY = "casr/failed"


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError, AttributeError):
        return None


def first_to_fail() -> bool:
    """Record that this rank stops with an error; True for the first rank to do so (which
    alone reports it). Without several processes, True."""
    store = _store() if is_active() else None
    if store is None:
        return True
    try:
        return store.add(_FAILED_KEY, 1) == 1
    except RuntimeError:  # the store is gone with the process that hosted it
        return is_main()


def peer_failed() -> bool:
    """True when another rank has stopped with an error (and reported it)."""
    store = _store() if dist.is_available() and dist.is_initialized() else None
    if store is None:
        return False
    try:
        return store.check([_FAILED_KEY])
    except RuntimeError:
        return False


def shutdown() -> None:
    global _cpu_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _cpu_group = None


def barrier() -> None:
    if is_active():
        dist.barrier(group=_cpu_group)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (pickled; tensors travel too)."""
    if not is_active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, group=_cpu_group)
    return box[0]


def gather_objects(value: Any) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not is_active():
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value, group=_cpu_group)
    return out


def in_turn(work: Callable[[], Any]) -> Any:
    """``work()`` on rank 0 first, then on each other node's first process, then on the rest:
    what it caches (synthesized audio, features, tokenizers) is written once per file system
    and read by the others."""
    if not is_active():
        return work()
    stage = 0 if rank() == 0 else 1 if local_rank() == 0 else 2
    result = None
    for turn in range(3):
        if turn == stage:
            result = work()
        barrier()
    return result


def _group_for(tensor: torch.Tensor):
    return None if tensor.device.type != "cpu" or _cpu_group is None else _cpu_group


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` as rank ``src`` has them (one message per dtype)."""
    if not is_active():
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    with torch.no_grad():
        for (dtype, _), tensors in groups.items():
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            wire = flat.to(torch.uint8) if dtype == torch.bool else flat
            dist.broadcast(wire, src=src, group=_group_for(wire))
            flat = wire.to(dtype)
            offset = 0
            for t in tensors:
                t.copy_(flat[offset: offset + t.numel()].view_as(t))
                offset += t.numel()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (in place; returned). No gradient flows."""
    if is_active():
        dist.all_reduce(tensor, group=_group_for(tensor))
    return tensor


def reduce_gradients(parameters: Sequence[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Sum the gradients of ``parameters`` and ``loss`` over the ranks (one all-reduce); returns
    the summed loss. Each rank's loss carries its share of the global batch, so the sums are the
    whole batch's mean loss and its gradient. A parameter no rank has a gradient for keeps none
    (AdamW then leaves it alone, as in one process); one that some ranks did not use gets zeros
    from them."""
    if not is_active():
        return loss
    params = list(parameters)
    device = loss.device
    pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    has = torch.tensor([float(p.grad is not None) for p in params], device=device)
    flat = torch.cat([*(x.to(device) for x in pieces), has, loss.detach().float().reshape(1)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset: offset + p.numel()].view_as(p).to(p.dtype).clone()
        offset += p.numel()
    used = flat[offset: offset + len(params)] > 0
    for p, keep in zip(params, used.tolist()):
        if not keep:
            p.grad = None
    return flat[-1].clone()


def global_mean(values: torch.Tensor) -> float:
    """The mean of ``values`` over every rank's elements (of one global batch). Call it on every
    rank at once (as a forward pass does)."""
    if not is_active():
        return float(values.float().mean())
    stats = torch.stack([values.float().sum(), torch.tensor(float(values.numel()), device=values.device)])
    dist.all_reduce(stats)
    return float(stats[0] / stats[1])


# ---- batch statistics --------------------------------------------------------------------------
class _SumOverRanks(torch.autograd.Function):
    """The sum over ranks, with its gradient: the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncedBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the whole global batch (every rank's
    part): exact two-pass mean and variance over all ranks' frames, gradients flowing through the
    all-reduces. Unlike torch.nn.SyncBatchNorm it also runs on the CPU (gloo). Evaluation, a
    frozen (eval-mode) base and a single process use the plain BatchNorm. Same parameters and
    buffers as BatchNorm1d, so state dicts are interchangeable."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_active()):
            return super().forward(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
        dist.all_reduce(count)
        mean = _SumOverRanks.apply(x.sum(dims)) / count
        centered = x - mean.reshape(shape)
        var = _SumOverRanks.apply(centered.pow(2).sum(dims)) / count
        out = centered * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * unbiased.detach())
        return out.to(input.dtype)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm1d of ``model`` a :class:`SyncedBatchNorm` (in place: same module
    objects and parameters, so optimizers and state dicts are unaffected)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm1d:
            module.__class__ = SyncedBatchNorm
    return model


# ---- evaluation --------------------------------------------------------------------------------
def gather_transcripts(order: Sequence[tuple | None], references: list[str],
                       hypotheses: list[str]) -> tuple[list[str], list[str]]:
    """Every rank's (reference, hypothesis) pairs of one test set, in the order one process
    would have them (``order``: a sort key per pair, (batch, rank, row): the ranks' parts of a
    batch are its consecutive slices), without the stand-ins (key None) that only kept an empty
    rank in step. With no keys (transcripts added without batches) the lists stay as they are."""
    if len(order) != len(references):
        if is_active():
            raise RuntimeError("gathering transcripts across processes needs a sort key per utterance")
        return references, hypotheses
    mine = [(key, r, h) for key, r, h in zip(order, references, hypotheses) if key is not None]
    if is_active():
        mine = sorted((item for part in gather_objects(mine) for item in part), key=lambda item: item[0])
    return [r for _, r, _ in mine], [h for _, _, h in mine]
