from memit.models.arch import ARCHS, Arch, UnsupportedModelError, get_arch
from memit.models.loading import load_model

__all__ = ["ARCHS", "Arch", "UnsupportedModelError", "get_arch", "load_model"]
