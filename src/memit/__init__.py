"""memit: write many facts into a transformer's weights in one closed-form step (MEMIT)."""

from memit.delta import Delta, load_delta
from memit.hparams import MemitHyperParams, preset_for
from memit.methods.memit import EditError, edit
from memit.models.arch import Arch
from memit.models.loading import load_model
from memit.requests import Case, EditRequest, load_cases, load_requests

__version__ = "0.1.0"

__all__ = ["Arch", "Case", "Delta", "EditError", "EditRequest", "MemitHyperParams", "edit", "load_cases",
           "load_delta", "load_model", "load_requests", "preset_for"]
