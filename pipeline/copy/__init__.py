"""`clipcache copy`: move a store between a folder and object storage, checking every object's bytes on the way."""
