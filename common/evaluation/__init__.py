"""Maps to numbers: the QUBIQ score, uncertainty metrics, the ensemble, prediction files, reports."""
