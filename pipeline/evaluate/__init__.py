"""Stage two, evaluation: predictions, metrics, zero-shot, the linear probe and the papers' protocols; one
record layout for every result (`results`), written with predictions and figures by `report`
(`run.evaluate` is `clipcache eval`)."""
