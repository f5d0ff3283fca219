"""The two stages: `extract` (videos to a store), `train` and `evaluate` (heads on the store), and
the `demo` running both; `models` and `common` are what the stages share."""
