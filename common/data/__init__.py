"""The QUBIQ releases on disk: layouts, case discovery, NIfTI reading, the data check, preprocessing, the demo data."""
