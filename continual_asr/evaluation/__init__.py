"""Evaluation: greedy decoding, WER (jiwer) and the WER matrix."""
