"""What a base model's errors are: WER with its substitutions, deletions and insertions on the
base task's train, dev and test sets, over seeds, and for a transducer head the greedy path
through dev utterances it shortens (issue: a transducer that transcribes the tiny preset's digit
strings). Train WER tells a model that cannot fit its data from one that does not generalise.

    python experiments/transducer_errors.py --stream tiny --preset tiny --seeds 0,1,2 --set head=hat --trace 3

Base models come from the cache folder like a run's (pretrained first where missing). The trace
prints, per encoder frame (40 ms), '.' where blank wins with every token under 5 %, 'EMIT token p'
where a token is emitted, and 'blank p / token p' where blank wins over a token that came close.
"""

from __future__ import annotations

from pathlib import Path

import click
import jiwer
import numpy as np
import torch

from continual_asr.config import make_config, parse_overrides
from continual_asr.data.dataset import collate
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.data.text import normalize_text
from continual_asr.evaluation.wer import greedy_decode
from continual_asr.model.heads import TransducerHead, head_of
from continual_asr.reporting.tables import markdown_table
from continual_asr.runner import default_cache_dir, setup_logging
from continual_asr.stream import load_stream
from continual_asr.training.pretrain import pretrain_base_model

SPLITS = ("train", "dev", "test")


def repeat_deletions(measure: jiwer.WordOutput) -> int:
    """Deleted reference words beside the same word ('six six nine' read 'six nine'): the
    deletions a transducer makes when it cannot tell a repeat from the token it just emitted."""
    count = 0
    for words, chunks in zip(measure.references, measure.alignments):
        for chunk in chunks:
            if chunk.type == "delete":
                count += sum(1 for i in range(chunk.ref_start_idx, chunk.ref_end_idx)
                             if (i > 0 and words[i - 1] == words[i]) or (i + 1 < len(words) and words[i + 1] == words[i]))
    return count


@torch.no_grad()
def transcribe(model, data, split: str, task, batch: int = 16) -> tuple[list[str], list[str]]:
    """References and greedy hypotheses of one split of one task, normalised as WER reads them."""
    dataset = data.dataset(split, task)
    refs, hyps = [], []
    for start in range(0, len(dataset), batch):
        samples = collate([dataset[i] for i in range(start, min(len(dataset), start + batch))])
        encoded, lengths = model(samples.features, samples.feature_lengths)
        hyps += greedy_decode(model, encoded, lengths, data.tokenizer)
        refs += samples.texts
    return [normalize_text(r) for r in refs], [normalize_text(h) for h in hyps]


@torch.no_grad()
def greedy_path(head: TransducerHead, encoded: torch.Tensor, tokenizer) -> str:
    """One utterance's greedy search (as ``TransducerHead.decode``, unbatched), written out per frame."""
    enc = head.enc_proj(encoded)
    pred, state = head.predict(torch.zeros(1, 1, dtype=torch.long))
    pred, steps = pred[:, 0], []
    for t in range(len(enc)):
        for _ in range(head.symbols_per_frame):
            log_probs = head.log_probs(head.joint(enc[t:t + 1], pred))[0]
            scores = log_probs.clone()
            scores[0] -= head.blank_penalty
            best, token = int(scores.argmax()), int(log_probs[1:].argmax()) + 1
            if best == 0:
                close = log_probs[token].exp() > 0.05
                steps.append(f"{t}:blank {log_probs[0].exp():.2f} / {tokenizer.decode([token - 1])} "
                             f"{log_probs[token].exp():.2f}" if close else f"{t}:.")
                break
            steps.append(f"{t}:EMIT {tokenizer.decode([best - 1])} {log_probs[best].exp():.2f}")
            new_pred, state = head.predict(torch.tensor([[best]]), state)
            pred = new_pred[:, 0]
    return " ".join(steps)


@click.command()
@click.option("--stream", "stream_name", default="tiny", show_default=True)
@click.option("--preset", default="tiny", show_default=True)
@click.option("--seeds", default="0", show_default=True, help="comma-separated pretraining seeds")
@click.option("--set", "overrides", multiple=True, help="key=value config fields (head=hat, ...)")
@click.option("--trace", default=0, show_default=True, help="greedy paths of this many shortened dev utterances "
                                                            "(first seed; transducer heads)")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
def main(stream_name, preset, seeds, overrides, trace, cache_dir) -> None:
    setup_logging(None, quiet=True)
    stream = load_stream(stream_name)
    config = make_config(preset, parse_overrides(overrides))
    if config.threads:  # as a run does: float sums, so WERs, depend on the thread count
        torch.set_num_threads(config.threads)
    cache = cache_dir or default_cache_dir()
    data = prepare_stream_data(stream, config, cache, progress=False)
    base = stream.base
    measures = {split: [] for split in SPLITS}
    traces = []
    for seed in [int(s) for s in seeds.split(",")]:
        model, _ = pretrain_base_model(data, config, seed, cache, torch.device("cpu"), progress=False)
        model.eval()
        for split in SPLITS:
            refs, hyps = transcribe(model, data, split, base)
            measures[split].append(jiwer.process_words(refs, hyps))
            if split == "dev" and trace and not traces and isinstance(head_of(model), TransducerHead):
                dataset = data.dataset("dev", base)
                shortened = [i for i, (r, h) in enumerate(zip(refs, hyps)) if len(h.split()) < len(r.split())]
                for i in shortened[:trace]:
                    sample = collate([dataset[i]])
                    encoded, lengths = model(sample.features, sample.feature_lengths)
                    traces.append(f"- ref '{refs[i]}', hyp '{hyps[i]}': "
                                  f"{greedy_path(head_of(model), encoded[0, : int(lengths[0])], data.tokenizer)}")
    rows = []
    for split, results in measures.items():
        wers = [100 * m.wer for m in results]
        spread = f"{np.mean(wers):.1f} ± {np.std(wers):.1f}" if len(wers) > 1 else f"{wers[0]:.1f}"
        words = sum(m.hits + m.substitutions + m.deletions for m in results)
        rows.append([split, spread, *(sum(getattr(m, k) for m in results)
                                      for k in ("substitutions", "deletions")),
                     sum(map(repeat_deletions, results)), sum(m.insertions for m in results), words])
    click.echo(markdown_table([f"{base.name}, {config.head} ({preset} preset, seeds {seeds})", "WER",
                               "substitutions", "deletions", "of them beside the same word", "insertions", "words"],
                              rows))
    if traces:
        click.echo("\nGreedy paths (dev, seed " + seeds.split(",")[0] + "):\n" + "\n".join(traces))


if __name__ == "__main__":
    main()
