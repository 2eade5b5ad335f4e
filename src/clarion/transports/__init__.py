"""Live transports: thin adapters that turn a connection into a hub `Session`."""
