"""Shared pipeline for the QUBIQ multi-expert study: data, preprocessing, models, training, scoring."""
