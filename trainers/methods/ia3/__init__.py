"""(IA)3 method: config.py and tuner.py (peft's own IA3: no layer.py or model.py)."""
