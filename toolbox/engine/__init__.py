"""Docker engine access: the client (client.py), GPU devices per backend (devices.py), the one launcher (container.py)."""
