from memit.methods.memit import EditError, edit, solve_update

__all__ = ["EditError", "edit", "solve_update"]
