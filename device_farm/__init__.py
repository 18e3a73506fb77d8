"""Fleet: run and benchmark packages on real or simulated devices."""
