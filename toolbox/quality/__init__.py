"""Is the output right? KL divergence to the cpu image's f16-KV logits (check.py, base.py), the verdict (verdict.py), the gate (gate.py)."""
