"""The host: facts read from sysfs / procfs (facts.py) and the doctor's verdicts on them (checks.py, memory.py, versions.py, doctor.py)."""
