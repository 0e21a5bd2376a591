"""Remote-sensing models, objectives, data readers and a synthetic Sentinel-like generator."""
