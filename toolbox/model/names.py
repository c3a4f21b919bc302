"""Names of the embedded model, shared by the writer (tiny.py) and discovery (files.py) without importing numpy."""

GENERATOR_VERSION = 1  # of model.tiny: bump when the bytes it writes for the same arguments change
DEFAULT_MODEL_NAME = f"toolbox-tiny-llama-v{GENERATOR_VERSION}.gguf"
