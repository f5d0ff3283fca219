"""`clipcache export`: a store's features as files other tools train on: ActionFormer/OpenTAD features,
annotations and settings, or video_features' per-video .npy layout."""
