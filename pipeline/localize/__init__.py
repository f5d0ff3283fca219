"""Temporal action localisation on dense stores: the proposal head's ground truth and loss (`targets`) and its
outputs decoded into proposals per window and per video (`decode`). Training and evaluation both use these, so
they live below both."""
