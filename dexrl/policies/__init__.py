from dexrl.policies.scripted import ScriptedGrasp

__all__ = ["ScriptedGrasp"]
