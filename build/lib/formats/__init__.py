"""Conventions shared by the pipelines and the service, which the library must not hold.

The layers, top to bottom, are ``pipelines`` → ``service`` → ``formats`` → ``latent_ode``
(docs/architecture.md; import-linter checks them). What both upper layers need and the pure
library may not contain (file-system layouts, pandas, pydantic's error format) lives here, one
concept per module:

- :mod:`formats.times`: time units and the ISO-8601 → float conversion.
- :mod:`formats.model_artifact`: where a forecaster lies inside a logged MLflow pyfunc model.
- :mod:`formats.validation_errors`: pydantic validation errors as one readable sentence.
- :mod:`formats.params`: nested dicts flattened to dotted keys (MLflow params, metrics).

Modules here may import :mod:`latent_ode`, never :mod:`service` or :mod:`pipelines`.
"""
