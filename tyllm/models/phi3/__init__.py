from tyllm.models.phi3.spec import PHI3

__all__ = ["PHI3"]
