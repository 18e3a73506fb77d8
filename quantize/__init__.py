"""Build side: calibration feeds, quantization recipes, parity and accuracy evaluation."""
