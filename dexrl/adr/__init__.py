"""Automatic Domain Randomization (pure controller; the env applies its ranges)."""

from dexrl.adr.controller import (
    MIN_RESETS,
    MODES,
    NUM_STEPS,
    PARAMS,
    SUCCESS_THRESHOLD,
    ADRState,
    Param,
    apply,
    initial_state,
    metrics,
    propose,
    update,
)

__all__ = ["MIN_RESETS", "MODES", "NUM_STEPS", "PARAMS", "SUCCESS_THRESHOLD", "ADRState", "Param", "apply",
           "initial_state", "metrics", "propose", "update"]
