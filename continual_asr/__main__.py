"""``python -m continual_asr`` is ``casr`` (useful under torchrun and in tests)."""

from .cli import main

main()
