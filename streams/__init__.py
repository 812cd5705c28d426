"""Built-in stream definitions (installed as continual_asr.stream_files): one YAML file per stream."""
