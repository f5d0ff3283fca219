"""Stage two, evaluation: predictions, metrics, reports and figures, zero-shot, the linear probe and
the papers' protocols (`run.evaluate`)."""
