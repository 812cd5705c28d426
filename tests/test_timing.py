"""experiments/timing.py: interleaved timing rotates the order, so no call always runs first."""

from experiment_scripts import ROOT, load_experiment


def test_interleaved_rounds_rotate_the_order(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    timing = load_experiment("timing")
    ran: list[str] = []
    medians = timing.interleaved_medians({name: (lambda name=name: ran.append(name)) for name in "abc"}, reps=3,
                                         warmup=1)
    assert sorted(medians) == ["a", "b", "c"] and all(seconds >= 0 for seconds in medians.values())
    assert ran == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, then the three rounds
