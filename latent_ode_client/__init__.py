"""A Python client of the latent-ode service (``docs/service.md`` "Python client").

It needs only httpx, pandas and numpy: none of the service's, the pipelines' or the model's
dependencies (import-linter checks it)::

    from latent_ode_client import LatentODEClient

    with LatentODEClient("http://127.0.0.1:8000") as client:
        forecast = client.predict(frame, quantiles=[0.05, 0.95])
"""

from latent_ode_client.client import RETRY_STATUSES, LatentODEClient, ServiceError
from latent_ode_client.frames import answer_to_frame, frame_to_series, quantile_column

__all__ = ["RETRY_STATUSES", "LatentODEClient", "ServiceError", "answer_to_frame",
           "frame_to_series", "quantile_column"]
