"""The models-from-code definition of the logged pyfunc model.

:func:`pipelines.tracking.log_pyfunc_model` logs this file as the model's code
(``python_model=<this file>``) instead of a pickled object: MLflow runs it when the model is
loaded, and :func:`mlflow.models.set_model` hands it the :class:`~pipelines.pyfunc.LatentODEPyfunc`
to use. Nothing is pickled, so loading never depends on CloudPickle or on the Python version that
logged the model; the weights come from the ``forecaster`` artifact as before.
"""

from mlflow.models import set_model

from pipelines.pyfunc import LatentODEPyfunc

set_model(LatentODEPyfunc())
