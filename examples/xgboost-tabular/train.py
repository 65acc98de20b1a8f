"""Train XGBoost on the dataset expagent hands over (EXPAGENT_DATASET_PATH), logging into MLFLOW_RUN_ID."""

import argparse
import os

import mlflow
import pandas as pd
import xgboost
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-estimators", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--max-depth", type=int, default=4)
    args = parser.parse_args()
    seed = int(os.environ.get("EXPAGENT_SEED", "42"))
    path = os.environ["EXPAGENT_DATASET_PATH"]
    frame = (
        pd.read_parquet(path) if os.environ.get("EXPAGENT_DATASET_FORMAT") == "parquet" else pd.read_csv(path)
    )
    target = os.environ["EXPAGENT_DATASET_TARGET"]
    x, y = frame.drop(columns=[target]), frame[target].astype("category").cat.codes
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    with mlflow.start_run():  # attaches to MLFLOW_RUN_ID
        mlflow.log_params({"n_estimators": args.n_estimators, "learning_rate": args.learning_rate,
                           "max_depth": args.max_depth})  # fmt: skip
        dataset = mlflow.data.from_pandas(frame, source=os.environ.get("EXPAGENT_DATASET_URI", path),
                                          name=os.environ.get("EXPAGENT_DATASET_NAME"),
                                          digest=os.environ["EXPAGENT_DATASET_SHA256"][:36])  # fmt: skip
        mlflow.log_input(dataset, context="training")
        model = xgboost.XGBClassifier(n_estimators=args.n_estimators, learning_rate=args.learning_rate,
                                      max_depth=args.max_depth, random_state=seed, n_jobs=1)  # fmt: skip
        model.fit(x_train, y_train)
        mlflow.log_metric("val_roc_auc", roc_auc_score(y_val, model.predict_proba(x_val)[:, 1]))
        mlflow.xgboost.log_model(model, name="model", pip_requirements=["xgboost-cpu", "mlflow"])


if __name__ == "__main__":
    main()
