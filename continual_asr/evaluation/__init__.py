"""Evaluation: greedy decoding, WER (jiwer), and the continual-learning metrics of the WER matrix."""
