"""The Hydra configs, installed as the package `ssl_bench.conf` (see ssl_bench/configs.py)."""
