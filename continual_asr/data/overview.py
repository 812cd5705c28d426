"""What ``casr data`` prints: per task and split, how much usable speech there is and what is wrong."""

from __future__ import annotations

from ..stream import StreamSpec, TaskSpec
from .features import SplitFeatures
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
    """A table (utterances, hours, mean duration, distinct words, problems) and the problems themselves."""
    header = (f"{'task':<24} {'role':<10} {'split':<5} {'utts':>7} {'hours':>7} {'mean s':>6} {'vocab':>6} "
              f"{'bad':>5}  source")
    lines = [f"stream {stream.name} ({stream.source})", header]
    problem_lines = []
    for task in stream.eval_tasks:
        for split in ("train", "test"):
            features = splits.get((task.name, split))
            if features is None:
                continue
            count, total = len(features.texts), sum(features.seconds)
            mean = total / count if count else 0.0
            vocabulary = len({word for text in features.texts for word in text.split()})
            lines.append(f"{task.name:<24} {_role(stream, task):<10} {split:<5} {count:>7} {total / 3600:>7.2f} "
                         f"{mean:>6.2f} {vocabulary:>6} {len(features.problems):>5}  {_source(task, features)}")
            problem_lines += [f"  {p}" for p in features.problems[:PROBLEMS_SHOWN]]
            if len(features.problems) > PROBLEMS_SHOWN:
                problem_lines.append(f"  ... and {len(features.problems) - PROBLEMS_SHOWN} more in "
                                     f"{display_path(features.source)}")
    if problem_lines:
        lines += ["problems:", *problem_lines]
    return "\n".join(lines)
