"""full method: config.py (and for peft-registered methods, layer.py + model.py)."""
