"""The store format, and nothing that consumes it: schema, writer, reader, int8, info, text table.
Needs only zarr and numpy, so any tool can read a store without torch."""
