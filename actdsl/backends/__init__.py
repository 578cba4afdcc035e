"""Code generators: one module per target, each turning a :class:`~actdsl.derive.Plan` into code."""
