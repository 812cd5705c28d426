"""Built-in strategies, one small module each, registered by name (installed as continual_asr.strategies)."""
