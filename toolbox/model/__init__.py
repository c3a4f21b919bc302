"""Models: the embedded tiny llama and large synthetic ones (tiny.py), model identity and discovery (files.py).

tiny.py needs numpy; it is imported only when a model is written (a bench on an existing model skips it).
"""

from toolbox.model.files import GGUF_MAGIC, ensure_default_model, model_identity, models_dir, resolve_models, split_parts

__all__ = ["GGUF_MAGIC", "ensure_default_model", "model_identity", "models_dir", "resolve_models", "split_parts"]
