"""Backends: how a captured graph is lowered for a target and how a compiled die program runs.

The emulated CPU backend (`backends.emulated_cpu`) is the one tyllm ships; a hardware backend
plugs in beside it with the same two halves: `lower` (graph -> library file) and `DieProgram`
(library file + parameters -> callable step).
"""
