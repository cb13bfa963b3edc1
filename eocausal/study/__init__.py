"""Study files and the runner that wires data, encoders, estimators and reports together."""
