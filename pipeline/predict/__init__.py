"""`clipcache predict`: a trained head applied to new videos, through stage one's decoding and encoder."""
