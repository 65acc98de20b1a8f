"""XGBoost as a built-in family: a baseline and a 2-trial study through the service (real MLflow)."""

from __future__ import annotations

from pathlib import Path

from graph_support import all_runs, experiment_reply, make_service

from agent.grammar.vocabulary import family_of


def test_xgboost_baseline_and_tuning_end_finished_with_metric_and_model(tmp_path: Path) -> None:
    reply = experiment_reply(model_family="xgboost", trials=2, params={"n_estimators": 20})
    service, model = make_service(tmp_path, [reply])
    result = service.send("xgb", "Tune xgboost on breast_cancer version 1 for 2 trials optimizing roc_auc")
    service.close()
    assert result.status == "answered", result.answer
    runs = {r.info.run_id: r for r in all_runs(service.settings)}
    trained = [r for r in runs.values() if r.data.tags.get("expagent.role") in ("baseline", "trial")]
    assert sorted(r.data.tags["expagent.role"] for r in trained) == ["baseline", "trial", "trial"]
    for run in trained:
        assert run.info.status == "FINISHED", run.data.tags.get("mlflow.note.content")
        assert run.data.params["model_family"] == "xgboost"
        assert 0.5 < run.data.metrics["val_roc_auc"] <= 1.0
        assert run.data.tags["expagent.model_uri"]
    client = service._tools.tracking  # noqa: SLF001
    assert client.search_logged_models([trained[0].info.experiment_id])
    assert set(r.info.status for r in runs.values()) == {"FINISHED"}
    model.assert_complete()


def test_xgboost_is_named_by_the_offline_vocabulary() -> None:
    assert family_of("XGBoost") == "xgboost" and family_of("xgb") == "xgboost"
