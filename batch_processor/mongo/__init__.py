"""MongoDB: the only code that imports pymongo (connection, source, sink, cache, errors)."""
