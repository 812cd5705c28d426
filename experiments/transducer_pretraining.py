"""How fast each head's base model learns: CTC against RNN-T and HAT, each from scratch or from
the CTC base model's encoder, with or without an auxiliary CTC loss (issue: a transducer that
learns as fast as CTC). Choices are read off the base task's DEV WER; test is printed beside it.

    python experiments/transducer_pretraining.py --stream tiny --preset tiny --seeds 0 --out table.md
    python experiments/transducer_pretraining.py --preset default --stream accents-then-noise \
        --only ctc --only "rnnt, init ctc + aux ctc 0.3 + warm-up 0.25"   # names hold commas: one --only each

Every base model goes into the cache folder like a run's (a later run with the same settings
reuses it). "pretraining s" is what the variant trained in this call (0 from the cache): the ctc
row runs first, so an ``init ctc`` variant finds its CTC base model cached and shows its own
training only; from an empty cache it costs the ctc row's seconds more.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from continual_asr.config import make_config, parse_overrides
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.reporting.tables import markdown_table
from continual_asr.runner import default_cache_dir, setup_logging
from continual_asr.stream import load_stream
from continual_asr.training.pretrain import evaluate_base_model, pretrain_base_model

# Every variant names every transducer field it relies on, so a change of the defaults does not change a row.
SCRATCH = {"transducer_init": "scratch", "transducer_ctc_weight": 0.0}
FROM_CTC = {"transducer_init": "ctc"}


def _transducer_variants(head: str) -> dict[str, dict]:
    """One head's rows: from scratch or from the CTC base model, with or without the auxiliary
    CTC loss, then the head warm-up on top of both aids, then other weights of the CTC loss."""
    rows = {head: SCRATCH, f"{head} + aux ctc 0.3": {**SCRATCH, "transducer_ctc_weight": 0.3},
            f"{head}, init ctc": {**FROM_CTC, "transducer_ctc_weight": 0.0, "transducer_warmup": 0.0}}
    for warmup in (0.0, 0.25, 0.5):
        name = f"{head}, init ctc + aux ctc 0.3" + (f" + warm-up {warmup:g}" if warmup else "")
        rows[name] = {**FROM_CTC, "transducer_ctc_weight": 0.3, "transducer_warmup": warmup}
    for weight in (0.1, 0.5, 0.7):
        rows[f"{head}, init ctc + aux ctc {weight:g} + warm-up 0.25"] = {
            **FROM_CTC, "transducer_ctc_weight": weight, "transducer_warmup": 0.25}
    return {name: {"head": head, **settings} for name, settings in rows.items()}


VARIANTS = {"ctc": {"head": "ctc"}, **_transducer_variants("rnnt"), **_transducer_variants("hat")}  # name: settings


@click.command()
@click.option("--stream", "stream_name", default="tiny", show_default=True)
@click.option("--preset", default="tiny", show_default=True)
@click.option("--seeds", default="0", show_default=True, help="comma-separated pretraining seeds")
@click.option("--set", "overrides", multiple=True, help="key=value for every variant")
@click.option("--only", multiple=True, help="a variant's name, repeatable (names hold commas); default: all")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="also write the table here")
def main(stream_name, preset, seeds, overrides, only, cache_dir, out) -> None:
    setup_logging(None, quiet=True)
    stream = load_stream(stream_name)
    cache = cache_dir or default_cache_dir()
    names = list(only) or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise click.UsageError(f"--only {unknown[0]!r}: no such variant (variants: {'; '.join(VARIANTS)})")
    base = stream.base.name
    cpu = torch.device("cpu")
    rows = []
    for name in names:
        dev, test, seconds = [], [], []
        for seed in [int(s) for s in seeds.split(",")]:
            config = make_config(preset, {**parse_overrides(overrides), **VARIANTS[name]})
            if config.threads:  # as a run does: float sums, so WERs, depend on the thread count
                torch.set_num_threads(config.threads)
            data = prepare_stream_data(stream, config, cache, progress=False)
            model, info = pretrain_base_model(data, config, seed, cache, cpu, progress=False)
            dev.append(evaluate_base_model(model, data, config, cpu, split="dev")[base])
            test.append(evaluate_base_model(model, data, config, cpu)[base])
            seconds.append(info["seconds"])
            click.echo(f"{name}, seed {seed}: dev {dev[-1]:.1f}, test {test[-1]:.1f}, "
                       f"{seconds[-1]:.0f} s{' (cached)' if info['cached'] else ''}", err=True)

        def spread(values):
            return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"
        rows.append([name, spread(dev), spread(test), f"{np.mean(seconds):.0f}"])
    table = markdown_table([f"head ({preset} preset, {stream.name}, seeds {seeds})", f"{base} dev WER",
                            f"{base} test WER", "pretraining s"], rows)
    click.echo(table)
    if out:
        Path(out).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
