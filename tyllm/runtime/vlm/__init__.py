"""The VLM side of the runtime: preprocessing (inputs.py, prompt.py), what a vision or language
die runs (runners.py), `VlmSession.generate_multimodal` (session.py), opening a tree (load.py)."""
