"""Stage one: list videos, sample and decode frames in worker processes, crop exactly as open_clip,
run the frozen image tower once and write its tokens into a store (`run.extract`)."""
