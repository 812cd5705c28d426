"""What ``casr data`` prints: per task and split, how much usable speech there is and what is wrong."""

from __future__ import annotations

from ..stream import HELD_OUT_PERCENT, StreamSpec, TaskSpec, builtin_streams
from .features import SplitFeatures
from .leakage import design_leaks, dev_test_sentences, leaked_utterances
from .manifest import display_path

PROBLEMS_SHOWN = 20  # per split; a systematically broken corpus would otherwise flood the terminal


def _role(stream: StreamSpec, task: TaskSpec) -> str:
    if task is stream.base:
        return "base"
    if task is stream.zero_shot:
        return "zero-shot"
    return f"task {stream.tasks.index(task) + 1}"


def _source(task: TaskSpec, features: SplitFeatures) -> str:
    condition = "" if task.condition.is_clean else f" + {task.condition.describe()}"
    if task.from_manifests:
        return display_path(features.source) + condition
    return f"synthesized: {'/'.join(task.voices)}{condition}"


def format_overview(stream: StreamSpec, splits: dict[tuple[str, str], SplitFeatures]) -> str:
    """A table (utterances, hours, mean duration, distinct words, problems, and for dev and test
    sets the utterances whose sentence or recording some training split has), the problems
    themselves and what evaluation shares with training (and test with dev)."""
    header = (f"{'task':<24} {'role':<10} {'split':<5} {'utts':>7} {'hours':>7} {'mean s':>6} {'vocab':>6} "
              f"{'bad':>5} {'leaked':>6}  source")
    lines = [f"stream {stream.name} ({stream.source})", header]
    leaked = leaked_utterances(splits)
    problem_lines = []
    for task in stream.eval_tasks:
        for split in ("train", "dev", "test"):
            features = splits.get((task.name, split))
            if features is None:
                continue
            count, total = len(features.texts), sum(features.seconds)
            mean = total / count if count else 0.0
            vocabulary = len({word for text in features.texts for word in text.split()})
            shared = "" if split == "train" else leaked[task.name, split]
            lines.append(f"{task.name:<24} {_role(stream, task):<10} {split:<5} {count:>7} {total / 3600:>7.2f} "
                         f"{mean:>6.2f} {vocabulary:>6} {len(features.problems):>5} {shared:>6}  "
                         f"{_source(task, features)}{_held_out(task, split)}")
            problem_lines += [f"  {p}" for p in features.problems[:PROBLEMS_SHOWN]]
            if len(features.problems) > PROBLEMS_SHOWN:
                problem_lines.append(f"  ... and {len(features.problems) - PROBLEMS_SHOWN} more in "
                                     f"{display_path(features.source)}")
    lines.append("(leaked: utterances whose sentence or recording is also in a training split, of any task)")
    warnings = [f"{task}/{split}: {count} of {len(splits[task, split].texts)} utterances speak a sentence or are "
                "a recording of the training data" for (task, split), count in leaked.items() if count]
    warnings += [f"{task}/test: {count} of {len(splits[task, 'test'].texts)} utterances speak a sentence of a dev set "
                 "(choices made on dev have heard them)" for task, count in dev_test_sentences(splits).items() if count]
    warnings += design_leaks(stream)
    if warnings:
        builtin = stream.source in {str(p) for p in builtin_streams().values()}
        lines += [f"warning: evaluation shares data with training{' (a built-in stream: a bug)' if builtin else ''}:",
                  *[f"  {w}" for w in warnings]]
    if problem_lines:
        lines += ["problems:", *problem_lines]
    return "\n".join(lines)


def _held_out(task: TaskSpec, split: str) -> str:
    if task.from_manifests and split in ("train", "dev") and task.train_manifest and not task.dev_manifest:
        return f" (about {HELD_OUT_PERCENT} % held out as dev)" if split == "train" else " (held out of train)"
    return ""
