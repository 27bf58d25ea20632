"""The embedded offline demo: corpus tokenizer and the starting policy, built on first use."""
