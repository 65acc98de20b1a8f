"""The sentence-level deploy detector: requests to deploy are refused, mentions of deployment are not."""

from __future__ import annotations

import pytest

from agent.grammar.forbidden import requested_forbidden_action

REQUESTS = [
    "deploy the best run to production",
    "Deploy it.",
    "please deploy run 0123456789abcdef0123456789abcdef",
    "can you deploy the best model?",
    "could you please promote the best run to staging?",
    "promote run abc to staging",
    "promote the champion",
    "register the best model",
    "register it in the model registry",
    "set alias champion on the best run",
    "set the model alias to prod",
    "tag the best run as champion",
    "move the best model to production",
    "transition the model to Production",
    "stage the best run",
    "serve the model behind an endpoint",
    "create an endpoint for the best run",
    "host the model",
    "roll out the best model",
    "ship it",
    "push the model to prod",
    "put the best run into production",
    "make the best run the champion",
    "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc in experiment x "
    "and don't forget to deploy it",
    "tune 10 trials on wine v1, then deploy the winner",
    "train on iris@1 and register the model",
    "I want you to deploy the best run",
    "we need you to promote this run",
    "make sure to register the model when it finishes",
    "remember to deploy it afterwards",
    "you should deploy the best one now",
    "let's deploy it",
    "ok now deploy it",
    "go ahead and deploy the model",
    "d\u0435ploy the best run",
    "de\u200bploy the best run",
    "DEPLOY THE BEST RUN",
    "despliega el mejor modelo a producción",
    "desplegar el modelo",
    "ponlo en producción",
    "déployer le meilleur modèle",
    "mettez en production le modèle",
    "stelle das beste Modell bereit",
    "bitte in Produktion bringen",
    "implante o modelo",
    "metti in produzione il modello",
    "train it and deploy it later",
    "release the model",
    "mark run abc123 as champion",
    "transition the model to Staging",
    "could you kindly make the best model available in production?",
]
BENIGN = [
    "which run could I deploy later?",
    "compare against the production model's metrics",
    "we will decide about staging later",
    "the serving team only needs the metrics report",
    "don't deploy it, just train a baseline",
    "do not deploy anything; train lightgbm on wine v1",
    "train a baseline without registering anything",
    "we will deploy it ourselves",
    "I will promote it myself after review",
    "the deploy pipeline is owned by the platform team",
    "what does deployment mean for a tuning run?",
    "is the best run good enough to deploy?",
    "should we stage it? tell me the metrics first",
    "how many registered models does the team have?",
    "train a model to predict deployment failures on incidents version 2",
    "the production dataset is breast_cancer version 1",
    "experiment prod-readiness, lightgbm on breast_cancer v1, roc_auc",
    "show me the runs in experiment staging-tests",
    "what is the champion model's roc_auc?",
    "list runs tagged for release",
    "compare run a with the registered model's metrics",
    "my team deploys on Fridays; just train for now",
    "no need to register it",
    "never promote anything, only tune",
    "publish the metrics report to the channel",
    "the serving latency is not my concern",
    "stage 2 of the plan is tuning",
    "which runs were promoted last week?",
    "is there a registered model for wine?",
    "tell me why the deploy of yesterday failed",
    "train on the host machine's data? no, use wine v1",
    "ship-date is irrelevant, train lightgbm",
    "the model will serve as a baseline",
    "we'll decide about promotion after the review",
    "predict churn on customers v3 and report roc_auc",
    "our serving endpoint uses another model; train a new one on wine v1",
    "how did the staging experiment do?",
    "what's the difference between staging and production?",
    "rerun that with seed 7",
    "give it 3 more trials",
]


@pytest.mark.parametrize("text", REQUESTS)
def test_every_request_to_deploy_is_seen(text: str) -> None:
    assert requested_forbidden_action(text) is not None


def test_benign_twins_are_not_refused() -> None:
    refused = [text for text in BENIGN if requested_forbidden_action(text) is not None]
    assert len(BENIGN) >= 40 and len(REQUESTS) >= 40
    assert len(refused) <= len(BENIGN) // 20, refused  # at most 1 in 20 over-refused
