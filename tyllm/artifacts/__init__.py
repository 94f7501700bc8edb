"""The artifact tree: layout, parameter files, JSON documents and the manifest."""
