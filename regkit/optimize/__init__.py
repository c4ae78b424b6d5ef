"""Pair registration by optimisation: ``register(moving, fixed) -> RegistrationResult``."""
from regkit.optimize.config import RegistrationConfig, load_config, preset_names
from regkit.optimize.register import RegistrationResult, register

__all__ = ["register", "RegistrationResult", "RegistrationConfig", "load_config", "preset_names"]
