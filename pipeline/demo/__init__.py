"""`clipcache demo`: both stages on generated videos with a tiny built-in model, offline."""
