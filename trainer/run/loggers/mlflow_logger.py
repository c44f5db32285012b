"""MLflow: the store named by ``MLFLOW_TRACKING_URI``, else MLflow's own local default
(``mlflow.db`` in the current directory); the experiment ``MLFLOW_EXPERIMENT_NAME``, else
"lmrunner".

The MLflow run is named after the run directory and tagged with its path and metadata; the
config goes in as parameters, and at the end config.yaml and loss.png as artifacts (the
checkpoints stay in the run directory). The MLflow run id is kept in the run directory's
trackers.json, so a continued run logs into the same MLflow run.
"""

from __future__ import annotations

import os
import time

from trainer.run.loggers.base import TrackedRun, TrackerHook, flat_params, remember, remembered

DEFAULT_EXPERIMENT = "lmrunner"
# Metrics go to the store in batches: one write per step would cost a step's time on a
# small model with a remote server.
_BATCH_POINTS = 200
_BATCH_SECONDS = 10.0
_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
_ARTIFACTS = ("config.yaml", "loss.png")


class MlflowLogger(TrackerHook):
    name = "mlflow"
    package = "mlflow"
    extra = "mlflow"

    def start(self, run: TrackedRun) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, or MLflow's local default
        self.run_dir = run.run_dir
        self.pending: list = []
        self.last_flush = time.monotonic()
        known = remembered(run.run_dir, self.name)
        if run.resumed_from is not None and self._exists(known.get("run_id")):
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "lmrunner.resumed_from_step", str(run.resumed_from))
            return
        tags = {f"lmrunner.{key}": value for key, value in run.tags.items()}
        created = self.client.create_run(self._experiment_id(), tags=tags, run_name=run.name)
        self.run_id = created.info.run_id
        remember(run.run_dir, self.name, {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri})
        self._log_params(run.config)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(key, value, now, step) for key, value in scalars.items()]
        if len(self.pending) >= _BATCH_POINTS or time.monotonic() - self.last_flush > _BATCH_SECONDS:
            self.flush()

    def log_text(self, step: int, text: str) -> None:
        self.client.log_text(self.run_id, text, f"samples/step-{step:08d}.txt")

    def flush(self) -> None:
        # log_batch takes at most 1000 metrics a call
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending, self.last_flush = [], time.monotonic()

    def end(self, status: str) -> None:
        self.flush()
        for name in _ARTIFACTS:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, _STATUS.get(status, "FAILED"))

    def _experiment_id(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else self.client.create_experiment(name)

    def _exists(self, run_id: str | None) -> bool:
        from mlflow.exceptions import MlflowException

        if not run_id:
            return False
        try:
            self.client.get_run(run_id)
        except MlflowException:  # kept for another store than this one
            return False
        return True

    def _log_params(self, config: dict) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)) for key, value in flat_params(config).items()]
        for start in range(0, len(params), 100):  # log_batch takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[start : start + 100])
