"""MLflow bookkeeping that training runs started side by side rely on."""

from mlflow import MlflowClient

from pipelines import tracking


def test_a_run_whose_experiment_another_run_created_meanwhile_joins_that_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    uri, first = tracking.start_run("race", "a")
    client = MlflowClient(uri)
    existing = client.get_experiment_by_name("race").experiment_id
    real_lookup = MlflowClient.get_experiment_by_name
    calls = []

    def lookup_that_lost_the_race(self, name):  # the first look happened before the other run created it
        calls.append(name)
        return None if len(calls) == 1 else real_lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_that_lost_the_race)
    _, second = tracking.start_run("race", "b")
    assert len(calls) == 2
    assert client.get_run(second).info.experiment_id == existing == client.get_run(first).info.experiment_id
