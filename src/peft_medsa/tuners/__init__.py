"""PEFT tuners of peft-medsa: the bottleneck adapter and the Med-SA method (encoder + decoder adapters)."""
