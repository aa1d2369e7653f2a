"""Training: :func:`fit` and the pieces it is made of, one concern per module.

- :mod:`~latent_ode.training.loop`: :func:`fit`, its typed results (:class:`TrainResult`,
  :class:`TrainEvent`) and the step, epoch and stopping logic.
- :mod:`~latent_ode.training.state`: :class:`TrainState`, everything the loop carries from one
  step to the next (and what a resumable checkpoint keeps of it).
- :mod:`~latent_ode.training.schedules`: the learning-rate decay and the KL warm-up.
- :mod:`~latent_ode.training.validation`: the validation metrics of a model.
- :mod:`~latent_ode.training.distributed`: data parallelism over a ``torch.distributed`` group.
- :mod:`~latent_ode.training.averaging`: the moving average of the weights (EMA).
- :mod:`~latent_ode.training.checkpointing`: the resumable checkpoint, written and read.
- :mod:`~latent_ode.training.progress`: the progress bar.
- :mod:`~latent_ode.training.calibration`: the predictive noise fitted after training.

Which task a batch trains, which tasks validation measures and the loop over a held-out split
live in :mod:`latent_ode.tasks`, shared with :func:`latent_ode.evaluate`.
"""

from latent_ode.training.calibration import calibrate_noise
from latent_ode.training.loop import TrainEvent, TrainResult, fit

__all__ = ["TrainEvent", "TrainResult", "calibrate_noise", "fit"]
