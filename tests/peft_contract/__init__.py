"""peft's generic test bodies (adapted from peft 0.21.2's tests/, Apache License 2.0), run by tests/test_peft_contract.py."""
