"""Served models: structure-in, voltage-out pyfuncs and the per-ion router."""
