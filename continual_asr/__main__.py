"""``python -m continual_asr`` is ``casr`` (useful under torchrun and in tests)."""

from .cli import main

if __name__ == "__main__":  # not again in a process that multiprocessing spawns from this one
    main()
